"""Each heuristic rule on a crafted text that breaks only it, and the filters on real sample pages."""

import pytest

from conftest import SHARED_DATA
from dataprep import extract, filters
from dataprep.ingest import read_records

GOOD = """The river rises in the hills to the north of the town and flows south for about forty miles.
Its valley was settled early, and the first mills were built on its banks in the eighteenth century.
Most of the old mills have gone, but two of them have been restored and are open to visitors in summer.
A footpath follows the water from the station to the church, passing meadows, orchards and a small lake.
Anglers come for the trout, which are said to be the largest in the county, and for the quiet mornings.
The local school takes children from the surrounding villages, and its library holds a collection of maps.
In winter the lower fields flood, which attracts large numbers of ducks, geese and wading birds.
Visitors who want to learn more about the history of the valley can find leaflets at the post office."""


def doc(text):
    return {"id": "x", "text": text}


def gq(**kw):
    return filters.gopher_quality_filter(**kw)


def gr(**kw):
    return filters.gopher_repetition_filter(**kw)


def test_good_text_passes_every_rule():
    for check in (filters.length_filter(200, 30), gq(), gr(), filters.c4_filter()):
        d = doc(GOOD)
        assert check(d) is None
        assert d["text"] == GOOD  # every line of it is a C4 line


@pytest.mark.parametrize("text, reason", [
    ("Too few words here. " * 5, "gopher_word_count"),
    (" ".join(["a"] * 30 + ["to", "of", "an", "is"] * 10), "gopher_mean_word_length"),
    (" ".join(["incomprehensibilities", "characteristically", "the", "and"] * 20), "gopher_mean_word_length"),
    (GOOD + "\n" + " ".join(["#tag"] * 20), "gopher_symbol_ratio"),
    ("\n".join(f"- item number {i} with the list and more words" for i in range(12)), "gopher_bullet_lines"),
    ("\n".join(f"Read the whole story of the old mill number {i} and more..." for i in range(20)),
     "gopher_ellipsis_lines"),
    (" ".join(f"{i * 1000 + 123} {i * 7777 + 4567} river the and" for i in range(30)), "gopher_alpha_words"),
    (" ".join(f"word{i} river valley mills" for i in range(20)), "gopher_stop_words"),
])
def test_gopher_quality_rules(text, reason):
    assert gq()(doc(text)) == reason


def test_gopher_quality_thresholds_are_settings():
    text = " ".join(["#tag"] * 20) + "\n" + GOOD
    assert gq()(doc(text)) == "gopher_symbol_ratio"
    assert gq(max_symbol_word_ratio=0.5)(doc(text)) is None
    assert gq(min_words=500)(doc(GOOD)) == "gopher_word_count"
    assert gq(stop_words=["zebra"])(doc(GOOD)) == "gopher_stop_words"


LINES = GOOD.splitlines()


@pytest.mark.parametrize("text, reason", [
    ("\n\n".join(LINES[:4] + LINES[:2]), "gopher_dup_paragraphs"),
    ("\n\n".join(LINES + [LINES[0] + " " + LINES[1] + " " + LINES[2]] * 2), "gopher_dup_paragraph_chars"),
    ("\n".join(LINES[:4] + ["Home", "News", "Home", "News", "Home"]), "gopher_dup_lines"),
    ("\n".join(LINES + [LINES[2] + " " + LINES[3]] * 3), "gopher_dup_line_chars"),
    (GOOD + " " + "buy now " * 60, "gopher_top_2gram"),
    (GOOD + " " + "alpha beta gamma " * 16, "gopher_top_3gram"),  # its 2-grams stay under 0.2
    (GOOD.replace("\n", " ") + " " + LINES[0] + " " + LINES[1] + " " + LINES[4], "gopher_dup_5gram"),
])
def test_gopher_repetition_rules(text, reason):
    assert gr()(doc(text)) == reason


def test_ngram_fractions_count_each_character_once():
    words = "a b c d e a b c d e".split()
    assert filters.dup_ngram_char_fraction(words, 5) == 1.0
    assert filters.dup_ngram_char_fraction("a b c d e f g h i j".split(), 5) == 0.0
    assert filters.top_ngram_char_fraction("aa bb aa bb cc dd".split(), 2) == pytest.approx(8 / 12)
    assert filters.top_ngram_char_fraction("aa bb cc dd".split(), 2) == 0.0  # nothing repeats


def test_c4_line_rules_clean_the_text():
    text = "\n".join([LINES[0], "Please enable JavaScript to view the comments powered by us.",
                      "This site uses cookies to improve your experience of it.", "Home | About | Contact",
                      LINES[1], "Read more about the valley and its people...", "Short line.", LINES[2]])
    d = doc(text)
    assert filters.c4_filter()(d) is None
    assert d["text"].splitlines() == LINES[:3]
    d = doc(text)
    assert filters.c4_filter(remove_javascript_lines=False, remove_policy_lines=False)(d) is None
    assert len(d["text"].splitlines()) == 5


@pytest.mark.parametrize("text, reason", [
    (GOOD + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.", "c4_lorem_ipsum"),
    (GOOD + "\nfunction f() { return the value of it; }", "c4_curly_braces"),
    ("\n".join(LINES[:2]) + "\nHome\nAbout us\nContact", "c4_too_few_sentences"),
])
def test_c4_page_rules(text, reason):
    assert filters.c4_filter()(doc(text)) == reason


def test_filters_on_real_pages():
    """wget's English pages: most pass; Gopher and C4 drop the boilerplate-heavy ones, each with
    its own reason; a kept page's text is its C4-clean lines."""
    checks = [filters.length_filter(200, 30), filters.gopher_repetition_filter(), filters.gopher_quality_filter(),
              filters.c4_filter()]
    reasons = []
    for path in sorted((SHARED_DATA / "warc").glob("wget-2024_dolma_sample-000*.warc.gz")):
        for r in read_records(path, 2_000_000):
            if r.drop_reason:
                continue
            d = doc(extract.html_to_text(extract.decode(r.payload, r.charset)))
            before = d["text"]
            reason = filters.first_failure(d, checks)
            reasons.append(reason)
            if reason is None:
                kept = d["text"].splitlines()
                assert kept and set(kept) <= {line.strip() for line in before.splitlines()}
                assert all(line.endswith((".", "!", "?", '"')) for line in kept)
    assert len(reasons) == 37
    assert 25 <= reasons.count(None) < 37
    assert all(r is None or r.startswith(("gopher_", "c4_", "too_short")) for r in reasons)
