"""Character cards V1/V2/V3, as JSON and embedded in PNG tEXt chunks (written here with Pillow)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from data_gen.pipeline.cards import CardError, card_from_json, read_card, read_cards
from tests.helpers.card_fixtures import V2, png_card


def test_v2_json_card_becomes_a_role(tmp_path) -> None:
    path = tmp_path / "mira.json"
    path.write_text(json.dumps(V2), encoding="utf-8")
    card = read_card(path, user="Ann")
    assert card.name == "Mira" and card.lang == "eng"
    assert card.description == (
        "Mira is a lighthouse keeper who counts ships.\n\nDry humour; never hurries.\n\n"
        "Ann arrives at Mira's lighthouse in a storm."
    )
    assert card.greeting == "*Mira lifts the lamp.* Who goes there, Ann?"
    assert card.dialogues == (
        (("Ann", "How many ships today?"), ("Mira", "Three. One of them twice.\nIt was lost.")),
        (("Ann", "Do you sleep?"), ("Mira", "Between ships.")),
    )


def test_png_card_prefers_ccv3_and_reads_v1_and_chinese(tmp_path) -> None:
    v3 = {"spec": "chara_card_v3", "spec_version": "3.0", "data": dict(V2["data"], name="Mira Three")}
    png_card(tmp_path / "a.png", {"chara": V2, "ccv3": v3})
    zh = {
        "name": "剑客",
        "description": "一位沉默寡言的剑客。",
        "personality": "冷静",
        "scenario": "{{user}}在客栈遇见他。",
    }
    png_card(tmp_path / "b.png", {"chara": V2["data"] | zh})
    cards = read_cards(tmp_path)
    assert [c.name for c in cards] == ["Mira Three", "剑客"]
    assert cards[1].lang == "zh" and cards[1].dialogues[1] == (("User", "Do you sleep?"), ("剑客", "Between ships."))


def test_bad_cards_name_the_file_and_field(tmp_path) -> None:
    with pytest.raises(CardError, match="x.json: data.name is missing or empty"):
        card_from_json({"spec": "chara_card_v2", "data": {"description": "d"}}, "x.json")
    with pytest.raises(CardError, match="spec='chara_card_v9'"):
        card_from_json({"spec": "chara_card_v9", "data": {}}, "x.json")
    Image.new("RGB", (2, 2)).save(tmp_path / "plain.png")
    with pytest.raises(CardError, match="plain.png: no character card in this PNG"):
        read_card(tmp_path / "plain.png")
    (tmp_path / "bad.json").write_text("{\n oops", encoding="utf-8")
    with pytest.raises(CardError, match="bad.json:2: invalid JSON"):
        read_card(tmp_path / "bad.json")
    (tmp_path / "bad.json").unlink()
    (tmp_path / "plain.png").unlink()
    (tmp_path / "one.json").write_text(json.dumps(V2), encoding="utf-8")
    (tmp_path / "two.json").write_text(json.dumps(V2), encoding="utf-8")
    with pytest.raises(CardError, match="two.json: character 'Mira' is also in"):
        read_cards(tmp_path)


def test_build_from_cards_runs_context_instruct_and_rolegpt_on_them(tmp_path, monkeypatch) -> None:
    from data_gen.__main__ import main
    from data_gen.files import read_json, read_jsonl
    from tests.helpers.card_fixtures import write_card_folder
    from tests.helpers.fake_openai_server import FakeOpenAIServer, rolebench_responder

    write_card_folder(tmp_path / "cards")
    instructions = tmp_path / "instructions.jsonl"
    instructions.write_text("".join(json.dumps({"instruction": f"Describe rain number {i}."}) + "\n" for i in range(4)))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
    with FakeOpenAIServer(rolebench_responder) as srv:
        args = ["build", "--cards", str(tmp_path / "cards"), "--instructions", str(instructions), "--model", "m"]
        args += ["--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--version", "0.1.0"]
        assert main([*args, "--base-url", srv.base_url, "--no-progress", "--test-role-count", "0"]) == 0
    out = tmp_path / "out" / "v0.1.0"
    desc = read_json(out / "profiles-eng" / "desc.json")
    assert set(desc) == {"Mira", "Old Tam Card"} and desc["Mira"].startswith("Mira is a lighthouse keeper")
    rows = read_jsonl(out / "profiles-eng" / "profiles-eng-Mira.jsonl")
    assert rows[1] == {"act_id": 0, "diag_id": 1, "role": "Mira", "content": "Three. One of them twice.\nIt was lost."}
    manifest = read_json(out / "manifest.json")
    assert manifest["usage"]["profiles"]["requests"] == 0  # a card has its description: no LLM call
    assert manifest["usage"]["context_instruct"]["requests"] > 0 and manifest["usage"]["rolegpt"]["requests"] > 0
    general = read_jsonl(out / "rolebench-eng/instruction-generalization/general/train.jsonl")
    assert {r["role"] for r in general} == {"Mira", "Old Tam Card"}


def test_profiles_from_cards_needs_no_key_and_bad_folders_are_one_line(tmp_path, monkeypatch, capsys) -> None:
    from data_gen.__main__ import main
    from data_gen.pipeline.profiles import load_profiles
    from tests.helpers.card_fixtures import write_card_folder

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    write_card_folder(tmp_path / "cards")
    assert main(["profiles", "--cards", str(tmp_path / "cards"), "--work", str(tmp_path / "work")]) == 0
    profiles = load_profiles(tmp_path / "work", "eng")  # what Context-Instruct and RoleGPT read
    assert profiles.titles == {"Mira": "Mira (character card)", "Old Tam Card": "Old Tam Card (character card)"}
    assert [s["role"] for s in profiles.segments] == ["Mira", "Old Tam Card"]
    assert main(["profiles", "--cards", str(tmp_path / "none"), "--work", str(tmp_path / "w2")]) == 1
    err = capsys.readouterr().err
    assert "none: no such folder of character cards" in err and "Traceback" not in err
