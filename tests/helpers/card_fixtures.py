"""Character cards written by tests: a V2 card's JSON, and PNGs with cards in tEXt chunks (Pillow)."""

from __future__ import annotations

import base64
import json

from PIL import Image
from PIL.PngImagePlugin import PngInfo

V2 = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Mira",
        "description": "{{char}} is a lighthouse keeper who counts ships.",
        "personality": "Dry humour; never hurries.",
        "scenario": "{{user}} arrives at <BOT>'s lighthouse in a storm.",
        "first_mes": "*{{char}} lifts the lamp.* Who goes there, {{user}}?",
        "mes_example": (
            "<START>\n{{user}}: How many ships today?\n{{char}}: Three. One of them twice.\n"
            "It was lost.\n<START>\n<USER>: Do you sleep?\n{{char}}: Between ships."
        ),
        "creator_notes": "not used",
    },
}


def png_card(path, chunks: dict[str, dict]) -> None:
    info = PngInfo()
    for key, card in chunks.items():
        info.add_text(key, base64.b64encode(json.dumps(card, ensure_ascii=False).encode()).decode("ascii"))
    Image.new("RGB", (4, 4), "white").save(path, pnginfo=info)


def write_card_folder(folder) -> None:
    """``mira.json`` (the V2 card) and ``tam.png`` (a V3 card named Old Tam Card in a ccv3 chunk)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mira.json").write_text(json.dumps(V2), encoding="utf-8")
    data = dict(V2["data"], name="Old Tam Card", first_mes="Mind the rocks, {{user}}.")
    png_card(folder / "tam.png", {"ccv3": {"spec": "chara_card_v3", "spec_version": "3.0", "data": data}})
