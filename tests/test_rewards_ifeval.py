"""IFEval verifier: ground-truth forms, the Tulu 3 `func_name` release functions, and no downloaded data."""

from __future__ import annotations

import json
import random
import socket

import pytest

from tulu_cli.rewards import verify
from tulu_cli.rewards.if_functions import IF_FUNCTIONS, IFEVAL_ID
from tulu_cli.rewards.ifeval import build_checks, score_ifeval
from tulu_cli.rewards.ifeval_checks import CHECKS

# (func_name constraint, IFEval constraint, a response following it, a response breaking it)
SAME_CHECKS = [
    ({"func_name": "verify_keywords", "keyword_list": ["river", "stone"]},
     ("keywords:existence", {"keywords": ["river", "stone"]}), "A river and a stone.", "A river only."),
    ({"func_name": "validate_forbidden_words", "forbidden_words": ["stone"]},
     ("keywords:forbidden_words", {"forbidden_words": ["stone"]}), "A river.", "A Stone here."),
    ({"func_name": "validate_response_language", "language": "fr"},
     ("language:response_language", {"language": "fr"}),
     "Le temps est magnifique aujourd'hui et nous allons nous promener le long de la rivière.",
     "The weather is lovely today and we are going to walk along the river with our friends."),
    ({"func_name": "validate_word_constraint", "N": 5, "quantifier": "at least"},
     ("length_constraints:number_words", {"num_words": 5, "relation": "at least"}),
     "one two three four five six", "one two"),
    ({"func_name": "verify_sentence_constraint", "N": 3, "quantifier": "at least"},
     ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"}),
     "One is here. Two is here. Three is here.", "Just one sentence here."),
    ({"func_name": "validate_paragraphs", "N": 2, "first_word": "river", "i": 2},
     ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "river"}),
     "Hello there.\n\nriver runs here.", "Hello there.\n\nocean runs here."),
    ({"func_name": "verify_postscript", "postscript_marker": "P.S."},
     ("detectable_content:postscript", {"postscript_marker": "P.S."}), "Body.\nP.S. more", "Body only."),
    ({"func_name": "validate_placeholders", "N": 2}, ("detectable_content:number_placeholders", {"num_placeholders": 2}),
     "Dear [name] at [address]", "Dear [name]"),
    ({"func_name": "verify_bullet_points", "N": 2}, ("detectable_format:number_bullet_lists", {"num_bullets": 2}),
     "List:\n* one\n* two", "List:\n* one"),
    ({"func_name": "validate_title"}, ("detectable_format:title", {}), "<<A title>>\nText.", "No title."),
    ({"func_name": "validate_choice", "options": ["My answer is yes.", "My answer is no.", "My answer is maybe."]},
     ("detectable_format:constrained_response", {}), "My answer is no.", "Perhaps."),
    ({"func_name": "validate_highlighted_sections", "N": 2},
     ("detectable_format:number_highlighted_sections", {"num_highlights": 2}), "*one* and *two*", "*one* only"),
    ({"func_name": "validate_sections", "N": 2, "section_splitter": "Section"},
     ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2}),
     "Section 1\nA.\nSection 2\nB.", "Section 1\nA."),
    ({"func_name": "validate_json_format"}, ("detectable_format:json_format", {}), '{"a": 1}', "a: 1"),
    ({"func_name": "validate_repeat_prompt", "original_prompt": "Say hi."},
     ("combination:repeat_prompt", {"prompt_to_repeat": "Say hi."}), "Say hi. Hi!", "Hi!"),
    ({"func_name": "validate_two_responses"}, ("combination:two_responses", {}), "One.\n******\nTwo.", "One."),
    ({"func_name": "validate_uppercase"}, ("change_case:english_capital", {}),
     "THE WEATHER IS LOVELY TODAY AND WE ARE GOING TO WALK.", "The weather is lovely today."),
    ({"func_name": "validate_lowercase"}, ("change_case:english_lowercase", {}),
     "the weather is lovely today and we are going to walk.", "The weather is lovely today."),
    ({"func_name": "validate_frequency_capital_words", "N": 2, "quantifier": "at least"},
     ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"}),
     "THIS is VERY good", "this is good"),
    ({"func_name": "validate_end", "end_phrase": "Any other questions?"},
     ("startend:end_checker", {"end_phrase": "Any other questions?"}), "Done. Any other questions?", "Done."),
    ({"func_name": "validate_quotation"}, ("startend:quotation", {}), '"Wrapped text."', "Not wrapped."),
    ({"func_name": "validate_no_commas"}, ("punctuation:no_comma", {}), "No commas here.", "Commas, here."),
    ({"func_name": "verify_keyword_frequency", "word": "river", "N": 2},
     ("keywords:frequency", {"keyword": "river", "frequency": 2, "relation": "at least"}),
     "river and river", "one river"),
    ({"func_name": "verify_letter_frequency", "letter": "z", "N": 2},
     ("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": "at least"}),
     "zoo zebra", "zoo"),
]  # fmt: skip


def test_func_names_map_one_to_one_onto_the_25_ifeval_ids():
    assert len(IF_FUNCTIONS) == 25
    assert sorted(IFEVAL_ID) == sorted(IF_FUNCTIONS)
    assert sorted(IFEVAL_ID.values()) == sorted(CHECKS)
    # verify_paragraph_count is the one with no common passing response (see the test below).
    covered = [constraint["func_name"] for constraint, *_ in SAME_CHECKS] + ["verify_paragraph_count"]
    assert sorted(covered) == sorted(IF_FUNCTIONS)


@pytest.mark.parametrize(
    "func_constraint, ifeval_constraint, good, bad", SAME_CHECKS, ids=lambda v: str(v)[:40]
)
def test_func_name_form_and_ifeval_form_agree(func_constraint, ifeval_constraint, good, bad):
    instruction_id, kwargs = ifeval_constraint
    assert IFEVAL_ID[func_constraint["func_name"]] == instruction_id
    ifeval_truth = json.dumps({"instruction_id_list": [instruction_id], "kwargs": [kwargs]})
    func_truth = json.dumps(func_constraint)
    for truth in (func_truth, ifeval_truth):
        assert verify("ifeval", good, truth) == 1.0, truth
        assert verify("ifeval", bad, truth) == 0.0, truth


def test_released_row_with_null_arguments():
    truth = json.dumps(
        {"func_name": "verify_keyword_frequency", "N": 3, "quantifier": None, "end_phrase": None, "keyword_list": None,
         "word": "river", "forbidden_words": None, "letter": None, "i": None, "first_word": None,
         "postscript_marker": None, "options": None, "section_splitter": None, "original_prompt": None}
    )  # fmt: skip
    assert verify("IFEVAL", "river river River.", truth) == 1.0
    # The release function wants exactly N whole-word occurrences, unlike IFEval's "at least".
    assert verify("ifeval", "river river river river", truth) == 0.0
    assert verify("ifeval", "rivers river river", truth) == 0.0


def test_release_semantics_differ_from_ifeval_where_the_release_does():
    lower = json.dumps({"func_name": "validate_lowercase"})
    assert verify("ifeval", "12345 !!!", lower) == 1.0
    around = json.dumps({"func_name": "validate_word_constraint", "N": 10, "quantifier": "around"})
    assert verify("ifeval", " ".join(["word"] * 11), around) == 1.0
    assert verify("ifeval", " ".join(["word"] * 12), around) == 0.0
    # The release divides paragraphs with "* * *", the benchmark with "***".
    release = json.dumps({"func_name": "verify_paragraph_count", "N": 2})
    benchmark = json.dumps(
        {"instruction_id_list": ["length_constraints:number_paragraphs"], "kwargs": [{"num_paragraphs": 2}]}
    )
    assert verify("ifeval", "One.\n* * *\nTwo.", release) == 1.0
    assert verify("ifeval", "One.\n* * *\nTwo.", benchmark) == 0.0
    assert verify("ifeval", "One.\n***\nTwo.", benchmark) == 1.0
    assert verify("ifeval", "One.\n***\nTwo.", release) == 0.0
    letters = json.dumps({"func_name": "verify_letter_frequency", "letter": "a", "N": 1})
    assert verify("ifeval", "A cat", letters) == 1.0  # case-sensitive count


def test_repeat_prompt_falls_back_to_the_row_prompt():
    truth = json.dumps({"func_name": "validate_repeat_prompt"})
    assert verify("ifeval", "Write a poem. Roses are red.", truth, prompt="Write a poem.") == 1.0
    ifeval_truth = json.dumps({"instruction_id_list": ["combination:repeat_prompt"], "kwargs": [{}]})
    assert verify("ifeval", "write a poem. Roses.", ifeval_truth, prompt="Write a poem.") == 1.0
    with pytest.raises(ValueError):
        verify("ifeval", "anything", ifeval_truth)


def test_fraction_of_instructions_and_loose():
    truth = json.dumps(
        {"instruction_id_list": ["punctuation:no_comma", "startend:quotation", "detectable_format:title"],
         "kwargs": [{}, {"end_phrase": None}, None]}
    )  # fmt: skip
    assert verify("ifeval", "No commas here", truth) == pytest.approx(1 / 3)
    response = 'Here you go:\n"<<Title>> text"'
    assert verify("ifeval", response, truth) == pytest.approx(2 / 3)
    assert verify("ifeval", response, truth, loose=True) == 1.0
    assert verify("ifeval", "   ", truth) == 0.0


def test_list_and_python_literal_ground_truths():
    item = {"instruction_id": ["punctuation:no_comma"], "kwargs": [{}]}
    assert score_ifeval("no commas", [item]) == 1.0
    assert score_ifeval("no commas", str([item])) == 1.0
    assert score_ifeval("no, commas", json.dumps([json.dumps(item)])) == 0.0


@pytest.mark.parametrize(
    "truth",
    [
        "{not json",
        json.dumps({"func_name": "no_such_function"}),
        json.dumps({"func_name": "verify_keyword_frequency", "word": "a"}),
        json.dumps({"func_name": "validate_word_constraint", "N": "ten", "quantifier": "at least"}),
        json.dumps({"instruction_id_list": ["keywords:nonexistent"], "kwargs": [{}]}),
        json.dumps(
            {"instruction_id_list": ["keywords:frequency"], "kwargs": [{"keyword": "a", "frequency": 2}]}
        ),
        json.dumps({"instruction_id_list": ["punctuation:no_comma"], "kwargs": []}),
        json.dumps([]),
        json.dumps(3),
    ],
)
def test_malformed_ground_truth_raises_value_error(truth):
    with pytest.raises(ValueError):
        build_checks(truth)


def test_no_network_and_no_nltk_data(tmp_path, monkeypatch):
    nltk = pytest.importorskip("nltk")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    response = "THE WEATHER IS LOVELY TODAY. WE WALK ALONG THE RIVER! DON'T WAIT?"
    for instruction_id, kwargs in [
        ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"}),
        ("change_case:capital_word_frequency", {"capital_frequency": 10, "capital_relation": "at least"}),
        ("change_case:english_capital", {}),
        ("language:response_language", {"language": "en"}),
        ("length_constraints:number_words", {"num_words": 12, "relation": "at least"}),
    ]:
        truth = json.dumps({"instruction_id_list": [instruction_id], "kwargs": [kwargs]})
        assert verify("ifeval", response, truth) == 1.0, instruction_id


def test_capital_word_count_skips_only_sentences_without_capital_words():
    from tulu_cli.rewards.ifeval_checks import _capital_words
    from tulu_cli.rewards.text_split import treebank_words

    pieces = ["Hello", "there", "I", "In't", "isn't", "'Tis", "Can", "cannot", "Cannot", "GIMME", "Gimme", "NASA",
              "a", "A", "x.", "Y.", '"Quoted"', "'single'", "don't", "DON'T", "Don't", "I'm", "ÉCOLE", "École", "ϒ",
              "(Paren)", "...", "?", "!", ",", "aB", "D'ye", "Wanna", "WANNA", "\n", "«Hi»", "I’m", "U.S."]  # fmt: skip
    rng = random.Random(1)
    for _ in range(3000):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        assert list(_capital_words(text)) == [word for word in treebank_words(text) if word.isupper()], text


def test_sentence_and_word_splitting_match_nltk():
    """`split_sentences` is an untrained Punkt and `treebank_words` NLTK's `word_tokenize` over it, on text
    with every kind of whitespace, sentence ends, quotes, numbers and initials."""
    from nltk.tokenize import NLTKWordTokenizer, PunktSentenceTokenizer

    from tulu_cli.rewards.text_split import split_sentences, treebank_words

    punkt, treebank = PunktSentenceTokenizer(), NLTKWordTokenizer()
    pieces = ["river", "The", "NASA", "J.", "U.S.", "3.5", "12.", "e.g.", "end.", "Why?", "Stop!", "Wait...",
              '"Quoted."', "(aside.)", "'tis", "don't", "can't", "a,", "b;", "--", "x:", "«Oui.»", "“Yes.”", "1,000"]  # fmt: skip
    spaces = [" ", " ", " ", "  ", "\n", "\n\n", "\t", "\r\n", "\x0b", "\x0c", " \n "]
    rng = random.Random(4)
    for _ in range(800):
        words = [rng.choice(pieces) for _ in range(rng.randint(1, 16))]
        text = "".join(word + rng.choice(spaces) for word in words).strip()
        assert list(split_sentences(text)) == punkt.tokenize(text), repr(text)
        expected = [word for sentence in punkt.tokenize(text) for word in treebank.tokenize(sentence)]
        assert treebank_words(text) == expected, repr(text)
