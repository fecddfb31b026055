"""Language id on real sample pages: the model ships in the py3langid wheel (nothing downloaded)."""

from collections import Counter

from conftest import SHARED_DATA
from dataprep import extract, langid
from dataprep.ingest import read_records


def page_languages(name):
    out = []
    for r in read_records(SHARED_DATA / "warc" / name, 2_000_000):
        if r.drop_reason is None:
            text = extract.decode(r.payload, r.charset)
            out.append(langid.identify(text if r.kind == "text" else extract.html_to_text(text)))
    return out


def test_sample_pages_get_their_languages():
    ja = page_languages("clueweb09-ja_resiliparse_clueweb-quirk.warc.gz")
    assert len(ja) == 29 and all(lang == "ja" and score > 0.9 for lang, score in ja)
    en = page_languages("wget-2024_dolma_sample-0000.warc.gz")
    assert Counter(lang for lang, _ in en)["en"] == len(en) == 22
    cc = Counter(lang for lang, _ in page_languages("cc-main-2020-34_resiliparse_warcfile.warc.gz"))
    assert cc["zh"] >= 8 and cc["ru"] >= 1  # the .cn and .ru pages


def test_language_filter_labels_every_document_and_drops_by_language():
    keep_en = langid.language_filter(["en"], min_score=0.5)
    en = {"text": "The committee will meet on Tuesday to discuss the budget for the coming year."}
    ru = {"text": "Комитет соберётся во вторник, чтобы обсудить бюджет на следующий год."}
    assert keep_en(en) is None and en["lang"] == "en" and 0.5 <= en["lang_score"] <= 1.0
    assert keep_en(ru) == "language" and ru["lang"] == "ru"
    assert langid.language_filter(["en", "ru"])(dict(ru)) is None
    assert langid.language_filter([])(dict(ru)) is None  # no languages configured: label only
    assert langid.language_filter(["en"], min_score=1.01)(dict(en)) == "language"
    empty = {"text": " 12 34 !! "}
    assert keep_en(empty) == "language" and (empty["lang"], empty["lang_score"]) == ("", 0.0)
