"""data_gen parsing: scripts, segments, model answers in the shapes real models produce, cleaning,
deduplication and retrieval."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from data_gen.errors import ConfigError
from data_gen.files import DataFileError
from data_gen.pipeline.clean import drop_reason
from data_gen.pipeline.config import GenConfig
from data_gen.pipeline.context_instruct import dedup, is_high_confidence, parse_qa
from data_gen.pipeline.profiles import (
    ScriptError,
    parse_script,
    parse_second_person,
    parse_third_person,
    profile_rows,
    segment_rows,
)
from data_gen.pipeline.rolegpt import DialogueRetriever, load_instructions, question_of

SCRIPT = """# comment
TITLE: Test Play
ROLE: Ann Smith = ANN

SCENE 1. A kitchen.
[Steam rises.]
ANN: The kettle sings at midnight.
BOB: Kettles do not sing.
ANN: This one does,
    and it sings in threes.
SCENE 2. A cellar.
BOB: Who is there?
SCENE 3. A garden.
ANN: Only the silver, Bob.
BOB：Then call the inspector.
"""


def test_parse_script_turns_narration_continuations(tmp_path):
    p = tmp_path / "play.txt"
    p.write_text(SCRIPT)
    s = parse_script(p)
    assert s.title == "Test Play" and s.roles == {"Ann Smith": "ANN"}
    assert [len(sc.turns) for sc in s.scenes] == [4, 1, 2]
    assert s.scenes[0].turns[0].speaker == "Narration"
    assert s.scenes[0].turns[3].text == "This one does, and it sings in threes."
    assert s.scenes[2].turns[1].speaker == "BOB"  # full-width colon
    rows = profile_rows(s, "Ann Smith")
    # scene 2 (where Ann does not speak) is left out; act/diag ids index the script
    assert [(r["act_id"], r["diag_id"]) for r in rows] == [(0, 0), (0, 1), (0, 2), (0, 3), (2, 0), (2, 1)]
    assert rows[1] == {"act_id": 0, "diag_id": 1, "role": "Ann Smith", "content": "The kettle sings at midnight."}


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("ROLE: A = A\nSCENE 1.\nA: hi\n", 2, "must start with 'TITLE"),
        ("TITLE: T\nROLE: A = A\nA: hi\n", 3, "dialogue before the first SCENE"),
        ("TITLE: T\nROLE: A\nSCENE 1.\nA: hi\n", 2, "expected 'ROLE: Display Name = SPEAKER'"),
        ("TITLE: T\nROLE: A = A\nSCENE 1.\n  orphan\n", 4, "indented continuation line with no turn"),
        ("TITLE: T\nROLE: A = A\nSCENE 1.\nA: hi\n[unclosed\n", 5, "unclosed narration"),
        (
            "TITLE: T\nROLE: A = A\nSCENE 1.\nA: hi\nHe walked in slowly and said nothing: at all\n",
            5,
            "expected 'SPEAKER: text'",
        ),
    ],
)
def test_script_errors_name_file_and_line(tmp_path, text, line, message):
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(ScriptError, match=message) as e:
        parse_script(p)
    assert str(e.value).startswith(f"{p}:{line}:")


def test_undecodable_script_is_named(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("TITLE: Caf\xe9\n".encode("latin-1"))
    with pytest.raises(ScriptError, match=f"{p}: cannot read script"):
        parse_script(p)


def test_segments_respect_budget_and_scene_boundaries():
    rows = [{"act_id": a, "diag_id": d, "role": "X", "content": "word " * 20} for a in range(5) for d in range(3)]
    segs = segment_rows(rows, budget=70)  # a turn is ~26 tokens, a scene ~78 (> budget: split at turns)
    assert sum(len(s) for s in segs) == len(rows)
    segs = segment_rows(rows, budget=170)  # two scenes per segment, never a scene cut
    assert [len(s) for s in segs] == [6, 6, 3]
    for s in segs:
        acts = [r["act_id"] for r in s]
        assert all(acts.count(a) == 3 for a in set(acts))


QA_VARIANTS = {
    "plain": "1. Question: Who are you?\n   Confidence: high\n   Answer: A detective.\n"
    "2. Question: Where do you live?\n   Confidence: low\n   Answer: Baker Street.",
    "bold": "Sure! Here you go:\n\n**1. Question:** Who are you?\n**Confidence:** High\n**Answer:** A detective.\n\n"
    "**2. Question:** Where do you live?\n**Confidence:** Low\n**Answer:** Baker Street.\n\nLet me know!",
    "q_numbered": "Q1: Who are you?\nConfidence: 9/10\nA1: A detective.\n"
    "Q2: Where do you live?\nConfidence: 2/10\nA2: Baker Street.",
    "one_line": "1) Question: Who are you? Confidence: high Answer: A detective.\n"
    "2) Question: Where do you live? Confidence: low Answer: Baker Street.",
    "wrapped": "(1) Question: Who\nare you?\nConfidence: HIGH.\nAnswer: A\ndetective.\n- Question: Where do you live?\n"
    "Confidence: 0.3\nAnswer: Baker Street.",
    # the paper's own grade names, as real models word them (0 of 180 questions kept before)
    "factualness": "1. Question: Who are you?\n   Factualness: High\n   Answer: A detective.\n"
    "2. Question: Where do you live?\n   Factualness: Low\n   Answer: Baker Street.",
    "completeness_bold": "**1. Question:** Who are you?\n**Completeness:** high\n**Answer:** A detective.\n\n"
    "**2. Question:** Where do you live?\n**Completeness:** low\n**Answer:** Baker Street.",
    "factualness_bold_colon_inside": "1. **Question:** Who are you?\n**Factualness:** High\n**Answer:** A detective.\n"
    "2. **Question:** Where do you live?\n**Factualness:** Low\n**Answer:** Baker Street.",
    "grade_one_line": "1) Question: Who are you? Grade: high Answer: A detective.\n"
    "2) Question: Where do you live? Grade: low Answer: Baker Street.",
    "score": "Q1: Who are you?\nScore: 9/10\nA1: A detective.\nQ2: Where do you live?\nScore: 2/10\nA2: Baker Street.",
    "rating": "1. Question: Who are you?\nRating: High\nAnswer: A detective.\n"
    "2. Question: Where do you live?\nRating: low\nAnswer: Baker Street.",
}


@pytest.mark.parametrize(
    "text",
    [
        "1. 问题：你是谁？\n   事实性：高\n   答案：俺老孙。\n"  # (kept apart)
        "2. 问题：花果山在哪？\n   事实性：低\n   答案：东胜神洲。",
        "1. 问题：你是谁？\n   完整性：高\n   答案：俺老孙。\n"  # (kept apart)
        "2. 问题：花果山在哪？\n   完整性：低\n   答案：东胜神洲。",
        "**问题1：**你是谁？\n**置信度：**高\n**答案：**俺老孙。\n\n"
        "**问题2：**花果山在哪？\n**置信度：**低\n**答案：**东胜神洲。",
        "1、问题：你是谁？ 评分：高 答案：俺老孙。\n2、问题：花果山在哪？ 评分：低 答案：东胜神洲。",
    ],
)
def test_parse_qa_chinese_grade_names(text):
    items = parse_qa(text)
    assert [(i.question, i.answer) for i in items] == [("你是谁？", "俺老孙。"), ("花果山在哪？", "东胜神洲。")]
    assert [is_high_confidence(i.confidence) for i in items] == [True, False]


@pytest.mark.parametrize("name", sorted(QA_VARIANTS))
def test_parse_qa_variants(name):
    items = parse_qa(QA_VARIANTS[name])
    assert [(i.question, i.answer) for i in items] == [
        ("Who are you?", "A detective."),
        ("Where do you live?", "Baker Street."),
    ]
    assert [is_high_confidence(i.confidence) for i in items] == [True, False]


def test_parse_qa_chinese_and_missing_fields():
    items = parse_qa(
        "1. 问题：你是谁？\n   置信度：高\n   答案：俺老孙。\n2. 问题：花果山在哪？\n   置信度：高\n"
        "3. 置信度：低\n   答案：不知道。"
    )
    assert [(i.question, i.confidence, i.answer) for i in items] == [
        ("你是谁？", "高", "俺老孙。"),
        ("花果山在哪？", "高", ""),
        ("", "低", "不知道。"),
    ]
    assert parse_qa("I cannot write these questions.") == []


@pytest.mark.parametrize(
    "grade, high",
    [
        ("high", True),
        ("High.", True),
        ("高", True),
        ("0.85", True),
        ("8/10", True),
        ("90%", True),
        ("medium", False),
        ("low", False),
        ("7/10", False),
        ("", False),
        ("低", False),
    ],
)
def test_confidence_grades(grade, high):
    assert is_high_confidence(grade) is high


def test_description_parsing():
    assert parse_third_person('**Description:** A sharp  mind.\n**Catchphrases:** "Elementary."') == (
        "A sharp mind.",
        '"Elementary."',
    )
    assert parse_third_person("A sharp mind without labels.") == ("A sharp mind without labels.", "")
    assert parse_third_person("描述：桀骜不驯。\n口头禅：“俺老孙来也！”") == ("桀骜不驯。", "“俺老孙来也！”")
    assert parse_second_person("Your description is: You are sharp.") == "You are sharp."
    assert parse_second_person("**Your description is:** You are sharp.") == "You are sharp."
    assert parse_second_person("你的描述是：你桀骜不驯。") == "你桀骜不驯。"


@pytest.mark.parametrize(
    "text, finish, lang, reason",
    [
        ("Elementary, my dear Watson.", "stop", "eng", None),
        ("", "stop", "eng", "empty"),
        ("   ", "stop", "eng", "empty"),
        ("The game is", "length", "eng", "truncated"),
        ("As an AI language model, I cannot.", "stop", "eng", "breaks_character"),
        ("Well, I'm just a large language model.", "stop", "eng", "breaks_character"),
        ("I'm sorry, but I can't help with that.", "stop", "eng", "refusal"),
        ("这是中文。", "stop", "eng", "wrong_language"),
        ("俺老孙来也！", "stop", "zh", None),
        ("作为一个人工智能，我不能。", "stop", "zh", "breaks_character"),
        ("This is English.", "stop", "zh", "wrong_language"),
    ],
)
def test_clean_reasons(text, finish, lang, reason):
    assert drop_reason(text, finish, lang) == reason


def test_dedup_normalised_lcs():
    qs = [
        "Holmes, how did you solve the case of the copper kettle?",
        "Holmes, how did you solve the case of the copper kettle, exactly?",
        "What do you think of Inspector Lestrade?",
        "holmes how did you SOLVE the case of the copper kettle",
    ]
    assert dedup(qs, "eng", 0.7) == [0, 2]
    assert dedup(["孙悟空，你的金箍棒有多重？", "孙悟空，你的金箍棒到底有多重？", "你为什么大闹天宫？"], "zh", 0.7) == [
        0,
        2,
    ]


def test_bm25_retrieves_the_role_own_replies():
    rows = [
        {"act_id": 0, "diag_id": i, "role": r, "content": c}
        for i, (r, c) in enumerate(
            [
                ("WATSON", "Where is the stolen silver?"),
                ("Holmes", "In the cellar next door."),
                ("WATSON", "Do you play the violin?"),
                ("Holmes", "When I think, Watson."),
                ("Narration", "He plays."),
                ("Holmes", "Music helps me think."),
            ]
        )
    ]
    r = DialogueRetriever("Holmes", rows, "eng")
    assert r.pairs == [
        ("Where is the stolen silver?", "In the cellar next door."),
        ("Do you play the violin?", "When I think, Watson."),
    ]  # narration is not a user turn
    assert r.top("Tell me about the violin", 1) == [r.pairs[1]]
    assert r.top("silver", 5)[0] == r.pairs[0] and len(r.top("silver", 5)) == 2
    assert r.top("zzz unknown", 1) == [r.pairs[0]]


def test_retriever_logs_nothing_at_info():
    code = (
        "import logging; logging.basicConfig(level=logging.INFO); "
        "from data_gen.pipeline.rolegpt import DialogueRetriever; "
        "DialogueRetriever('H', [{'act_id': 0, 'diag_id': 0, 'role': 'W', 'content': 'hi'}, "
        "{'act_id': 0, 'diag_id': 1, 'role': 'H', 'content': 'yo'}], 'eng').top('hi', 1)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}
    )
    assert out.returncode == 0 and "bm25s" not in out.stderr, out.stderr


def test_data_gen_never_imports_jax():
    code = (
        "import sys; import data_gen.__main__, data_gen.pipeline.build, data_gen.pipeline.rolegpt as r; "
        "r._import_bm25s(); bad = [m for m in sys.modules if m.split('.')[0] in ('jax', 'rolellm_jax')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_instructions_and_config_errors(tmp_path):
    p = tmp_path / "i.jsonl"
    p.write_text('{"instruction": "Add.", "input": "1 and 2", "output": "3"}\n\n{"instruction": 5}\n')
    with pytest.raises(DataFileError, match=rf"{p}:3: 'instruction' must be a string"):
        load_instructions(p)
    p.write_text('{"instruction": "Add.", "input": "1 and 2"}\nnot json\n')
    with pytest.raises(DataFileError, match=rf"{p}:2: invalid JSON"):
        load_instructions(p)
    assert question_of({"instruction": "Add. ", "input": " 1 and 2"}) == "Add.\n1 and 2"
    with pytest.raises(ConfigError, match="lang"):
        GenConfig(lang="fr")
    with pytest.raises(ConfigError, match="samples"):
        GenConfig(samples=1)


def test_retrieval_does_not_depend_on_jax_being_loaded():
    """bm25s's 'auto' top-k uses jax when it is imported; ties must not change the few-shot turns."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "if sys.argv[1] == 'jax': import jax\n"
        "from data_gen.pipeline.rolegpt import DialogueRetriever\n"
        "rows = []\n"
        "for i in range(12):  # identical exchanges: every score ties\n"
        "    rows += [{'act_id': 1, 'diag_id': 2 * i, 'role': 'Watson', 'content': 'the sea, Holmes?'},\n"
        "             {'act_id': 1, 'diag_id': 2 * i + 1, 'role': 'Holmes', 'content': f'the sea {i}'}]\n"
        "print([a for _, a in DialogueRetriever('Holmes', rows, 'en').top('the sea', 5)])\n"
    )
    outputs = {
        mode: subprocess.run(
            [sys.executable, "-c", probe, mode],
            capture_output=True,
            text=True,
            env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"},
            check=True,
        ).stdout
        for mode in ("nojax", "jax")
    }
    assert outputs["nojax"] == outputs["jax"] and outputs["jax"].startswith("['the sea")


def test_generator_lang_takes_every_spelling_of_the_one_vocabulary():
    assert GenConfig(lang="en").lang == "eng" and GenConfig(lang="en").prompt_lang == "en"
    assert GenConfig(lang="zh").prompt_lang == "zh"
    with pytest.raises(ConfigError, match="lang: 'fr' is not one of eng"):
        GenConfig(lang="fr")
