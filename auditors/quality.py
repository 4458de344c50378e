"""Quality and style heuristics: per-record flags for outputs that are empty, too short, copied from
the prompt, refusals, cut off, repetitive or not in the expected language, plus version-level style
homogeneity (how many responses open the same way: the "surface-level pattern" risk).

Every per-record flag is a Polars string expression over the record's `prompt` and `response` (no
Python loop per record) and depends only on the record's content and the config, so it goes through
the record cache: re-auditing a child version computes nothing for the records it shares with an
audited parent. The opener figures (and `quality_common_opener`) depend on the whole version and are
computed on every run; they are cheap.

Flags (columns `quality_<flag>`; `quality_flagged` is any of them, `quality_flags` their names):
- empty_output: the response is empty or whitespace only.
- short_output: a non-empty response with fewer than `short_min_words` words or `short_min_chars`
  characters. The defaults only catch one-character outputs: real instruction data is full of correct
  one-word labels ("Positive", "Yes", "C"); raise them for open-ended generation data.
- output_in_instruction: the response equals the prompt, or is contained in it and has at least
  `copy_min_words` words (a short label such as "positive" is naturally part of a classification
  prompt), compared after NFKC and trimming only (see `_copy_form`). Extraction tasks ("quote the
  sentence that ...") fire by design: their answer is a copy, worth a look.
- refusal: a `refusal_patterns` regex matches the response (case-insensitive; curly apostrophes are
  read as straight ones; quoted strings are skipped). The defaults need the refusal itself ("I'm
  sorry, but I can't assist", "I cannot assist", "As an AI language model, ..."), not just an
  apology, so "sorry" inside a legitimate answer is not a refusal.
- truncated: the response stops before it is finished; any of (rules in `_truncated`):
  1. an odd number of ``` fences;
  2. code (see CODE_LIKE) that does not end on a closer and has more opening than closing brackets
     outside string literals;
  3. it ends with "..." or "…" (3+ words);
  4. it ends with a comma, colon, "=", an opening bracket, or a bare bullet / list number;
  5. prose (not code, 3+ words) ending with a dangling word: "and", "the", "of", "because", ...
     (lower case only: "Option A" is a label);
  6. prose of `truncated_min_words`+ words, written in sentences (one ends somewhere), whose last
     line is not a list item / table row / heading and ends, without closing punctuation, in a
     sentence of `truncated_tail_words`+ words.
  Only rules 1 and 3 can fire on an answer ending on `.!?`, a closing bracket (`}` `)` `]` `>`), a
  quote or a code fence: code ending in `}` or `)` is fine; so are shell ending in `fi`/`done`,
  lists and signatures. Randomly cut real answers are caught about half the time for prose and 70% for code: a cut
  right after a sentence or list item looks finished.
- repetitive: `quality_repetition` (the larger of the share of duplicate word n-grams and the share
  of duplicate non-empty lines) reaches `repetition_threshold` on a response with at least
  `repetition_min_ngrams` n-grams, or one line of at least `line_min_chars` characters occurs
  `line_repeat_limit` times or more.
- non_english (only when `expected_language` is "en"): see `_non_english`.

Style homogeneity (summary `style`, detail frame `openers`): the share of responses opening with the
most common first 1, 2 and 3 words (lower case, punctuation dropped: "Sure! Here is" -> "sure here
is"), the top-10 three-word openers, and the share of prompts starting with the most common first
word (usually the instruction verb). `quality_common_opener` marks rows whose first `opener_words`
words are an opener used by more than `common_opener_share` of the responses. It describes the
version, not the record, so it is neither cached nor part of `quality_flagged`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from assay.core.errors import AssayError

from .base import AuditContext, Auditor, AuditResult, Rows
from .quality_repetition import repetition_columns

FLAGS = ("empty_output", "short_output", "output_in_instruction", "refusal", "truncated", "repetitive",
         "non_english")

# Refusals and assistant boilerplate. Each pattern needs the refusal or the self-description, not a
# bare apology: "I'm sorry to hear that" or "sorry for the delay" inside a real answer is fine.
DEFAULT_REFUSAL_PATTERNS = [
    r"\bas an? (?:ai|artificial intelligence)(?: language)?(?: model| assistant| chatbot)?\b[,.]",
    r"\bas an? (?:ai|artificial intelligence) (?:language model|model|assistant|chatbot|developed|created|trained)\b",
    r"\bas an? (?:large )?language model\b",
    r"\bi(?:'m| am) (?:just |only )?an? (?:ai|language model|artificial intelligence|virtual assistant)\b",
    r"\b(?:i'm|i am|i apologi[sz]e|sorry)\W+(?:sorry\W+)?(?:but\W+)?(?:as an ai\W+)?"
    r"i (?:can't|cannot|can not|won't|will not|am unable to|'m unable to|am not able to|'m not able to"
    r"|am not allowed to) (?:assist|help|provide|comply|fulfil+|complete|answer|generate|create|write|engage"
    r"|do that|do this|support|give|share|access|browse|perform|offer|produce|respond|continue)\b",
    r"\bi apologi[sz]e,? but\b",
    # "I cannot assist" is a refusal; "I cannot help" only with its object ("I cannot help but smile")
    r"\bi (?:can't|cannot|can not|am unable to|'m unable to|am not able to|'m not able to) (?:assist|comply)\b",
    r"\bi (?:can't|cannot|can not|am unable to|'m unable to|am not able to|'m not able to) help (?:you )?with"
    r" (?:that|this|your)\b",
    r"\bi (?:can't|cannot|can not|am unable to|won't|will not) (?:fulfil+|comply with) (?:that|this|your)\b",
    r"\bi (?:can't|cannot|can not) (?:provide|generate|create|write) (?:that|this|such|content|any)\b",
    r"\bi (?:do not|don't) have (?:personal (?:opinions|feelings|experiences|beliefs|preferences|emotions)"
    r"|the ability to|access to (?:real-time|the internet|current|personal|external))",
    r"\b(?:my|the) (?:knowledge|training)(?: data)? cut-?off\b",
    r"\bas of my (?:last|latest) (?:update|training|knowledge)",
    r"\b(?:it is|it's) not (?:appropriate|ethical) for me to\b",
    r"\b(?:against|violates?) (?:my|openai's) (?:programming|guidelines|content policy|policies)\b",
]

# Words a finished English sentence does not end on; a response that stops on one was cut off.
# "for", "that", "as", "by", "in", "on", "have" are left out: "what it is used for", "sign in",
# "nice to have" end list items and titles.
DEFAULT_DANGLING_WORDS = [
    "and", "or", "but", "nor", "because", "although", "though", "whereas", "unless", "than", "the", "a",
    "an", "of", "with", "from", "into", "onto", "to", "which", "whose", "when", "if", "while", "its",
    "their", "my", "your", "our", "is", "are", "was", "were", "be", "been", "would", "could", "should",
    "they", "we", "very",
]

# Stopword heuristic for Latin-script languages other than English. Words that are also common in
# English, code or URLs ("a", "in", "die", "per", "non", "son", "come", "also", "y", "os", "com", "do",
# "se", "al") are left out.
ENGLISH_STOPWORDS = [
    "the", "and", "of", "to", "is", "in", "that", "it", "for", "on", "with", "as", "was", "are", "be",
    "this", "you", "by", "at", "from", "or", "have", "not", "but", "they", "which", "we", "can", "will",
    "your", "has", "their", "if", "what", "there", "all", "would", "more", "about", "an", "he", "she",
    "i", "a", "my", "our", "its", "been", "were", "do", "does", "how", "when", "who", "should",
]
FOREIGN_STOPWORDS = [
    # French
    "le", "la", "les", "des", "est", "et", "une", "du", "pour", "dans", "qui", "pas", "sur", "avec",
    "sont", "cette", "il", "elle", "nous", "vous", "ils", "aux", "mais", "très", "être", "où",
    # Spanish
    "el", "los", "las", "es", "del", "por", "para", "con", "una", "que", "como", "pero", "más", "muy",
    "está", "sus",
    # German
    "der", "das", "und", "ist", "nicht", "ein", "eine", "mit", "sich", "auf", "für", "dem", "zu", "von",
    "ich", "wir", "auch", "oder", "werden", "wird",
    # Italian
    "di", "che", "è", "della", "gli", "sono", "nel", "alla", "questo",
    # Portuguese
    "não", "uma", "são", "também", "pelo", "pela",
]


@dataclass
class QualityConfig:
    """Defaults were tuned on the shared real data (Self-Instruct seed and user-oriented tasks,
    CodeAlpaca): see each field's help for the reason, and tests/auditors/test_quality.py for the
    flag rates they give there."""

    # --- short outputs
    short_min_words: int = field(default=1, metadata={
        "help": "a non-empty response with fewer words is short (default 1: one-word labels are normal)"})
    short_min_chars: int = field(default=2, metadata={
        "help": "a non-empty response with fewer characters (trimmed) is short (default 2: one-character outputs)"})
    # --- copied prompt
    copy_min_words: int = field(default=4, metadata={
        "help": "a response contained in the prompt is a copy only with at least this many words "
                "(equality always counts): shorter ones are labels the prompt lists"})
    # --- refusals
    refusal_patterns: list[str] = field(default_factory=lambda: list(DEFAULT_REFUSAL_PATTERNS), metadata={
        "help": "regular expressions (Rust syntax, matched case-insensitively) for refusals and assistant "
                "boilerplate"})
    # --- truncation
    truncated_min_words: int = field(default=20, metadata={
        "help": "the unterminated-sentence rule only judges responses of at least this many words"})
    truncated_tail_words: int = field(default=8, metadata={
        "help": "words after the last sentence end of the last line for it to count as an unfinished "
                "sentence (short tails are signatures, list items, labels)"})
    dangling_words: list[str] = field(default_factory=lambda: list(DEFAULT_DANGLING_WORDS), metadata={
        "help": "lower-case words a finished sentence does not end on (prose ending on one is truncated)"})
    # --- repetition
    repetition_ngram: int = field(default=3, metadata={"help": "n of the word n-grams whose duplicates are counted"})
    repetition_threshold: float = field(default=0.5, metadata={
        "help": "quality_repetition at or above this is repetitive (0.5: half the n-grams or lines are repeats; "
                "the highest score on the real CodeAlpaca / Self-Instruct data is 0.45, short code with repeated "
                "signatures; generation loops score 0.8+)"})
    repetition_min_ngrams: int = field(default=20, metadata={
        "help": "the repetition score only flags responses with at least this many n-grams (short texts are noisy)"})
    line_repeat_limit: int = field(default=5, metadata={
        "help": "a line occurring this many times or more in one response is repetitive (real data: at most 4, "
                "in a Java class's getters)"})
    line_min_chars: int = field(default=12, metadata={
        "help": "lines shorter than this (trimmed) are ignored by line_repeat_limit: '}', 'fi', 'break;' "
                "repeat in code"})
    # --- language
    expected_language: str | None = field(default="en", metadata={
        "help": "'en' flags responses that are not English; empty or None switches the check off"})
    language_column: str = field(default="response", metadata={
        "help": "text checked for its language: response, prompt or text"})
    latin_share_min: float = field(default=0.5, metadata={
        "help": "below this share of Latin-script letters among all letters, a text is not English"})
    language_min_letters: int = field(default=4, metadata={
        "help": "texts with fewer letters are not judged (emoji, numbers, code symbols)"})
    stopword_min_words: int = field(default=8, metadata={
        "help": "the stopword rule (Latin-script languages) only judges texts with at least this many words"})
    foreign_stopwords_min: int = field(default=3, metadata={
        "help": "at least this many French/Spanish/German/Italian/Portuguese function words, and more of them "
                "than English ones, make a Latin-script text non-English"})
    # --- style homogeneity
    opener_words: int = field(default=3, metadata={
        "help": "words of a response's opening compared by quality_common_opener (1-3)"})
    common_opener_share: float = field(default=0.1, metadata={
        "help": "responses opening with an opener used by more than this share of responses get "
                "quality_common_opener (0.1: one in ten answers starting alike is a template tic)"})
    opener_min_count: int = field(default=5, metadata={
        "help": "an opener needs at least this many responses to be common (tiny versions)"})
    examples: int = field(default=3, metadata={"help": "examples kept per flag in the summary"})


# ---- per-record rules ---------------------------------------------------------------------------

def _words(expr: pl.Expr) -> pl.Expr:
    return expr.str.count_matches(r"\S+")


def _any_regex(expr: pl.Expr, patterns: list[str]) -> pl.Expr:
    if not patterns:
        return pl.lit(False)
    return expr.str.contains("(?i)" + "|".join(f"(?:{p})" for p in patterns))


# code: an indented line, a line ending in ; { or }, or a line opening with a shebang, #include or a
# lower-case keyword (English sentences open capitalised)
CODE_LIKE = (r"(?m)(?:^(?:\t| {2,})\S|[;{}]\s*$|^\s*(?:#!|#include\b|(?:def|class|import|from|return|function|"
             r"public|private|const|let|var|int|void|for|while|if|echo|SELECT|select)\b))")
# the last line is structured: a list item, a table row or a heading, not a sentence
STRUCTURED_LINE = r"^\s*(?:[-*+•>#]|\d+[.)\-:]|[A-Za-z][.)]\s|\S.*\|)"
# a finished ending: sentence punctuation, closing brackets and quotes, markup
CLOSED_END = r"[.!?。！？\"'”’)\]}>`*_~|]$"


def _truncated(r: pl.Expr, cfg: QualityConfig) -> pl.Expr:
    """`r` is the response with trailing whitespace removed."""
    words = _words(r)
    last_line = r.str.extract(r"([^\n]*)$").fill_null("")
    tail = last_line.str.extract(r"([^.!?:;]*)$").fill_null("")
    code = r.str.contains(CODE_LIKE)
    odd_fences = (r.str.count_matches("```") % 2) == 1
    # code with more opening than closing brackets (outside string literals) stops inside a block
    bare = _drop_strings(r, single_quotes=True)
    # (when it does not end on a closer: the brackets of code that ends on "}" or ")" are miscounted
    # more often, e.g. by a string with a raw line break, than such code is cut off)
    unbalanced = code & ~r.str.contains(CLOSED_END) & pl.any_horizontal(
        bare.str.count_matches(o, literal=True) > bare.str.count_matches(c, literal=True)
        for o, c in (("{", "}"), ("(", ")"), ("[", "]")))
    ellipsis = r.str.contains(r"(?:\.\.\.|…)$") & (words >= 3)
    # ends on a comma, colon, "=", an opening bracket, or a bare bullet / list number
    open_punct = r.str.contains(r"(?:[,:=(\[{]|(?:^|\n)\s*(?:[-*•]|\d+[.)]))$")
    dangling = pl.lit(False)
    if cfg.dangling_words:
        # case-sensitive on purpose: a capital "A" at the end is a label ("Option A"), "a" is cut off
        dangling = (r.str.contains(r"(?:^|[\s(])(?:" + "|".join(map(re.escape, cfg.dangling_words)) + r")$")
                    & (words >= 3) & ~code)
    unterminated = (
        (words >= cfg.truncated_min_words) & ~code
        & ~last_line.str.contains(STRUCTURED_LINE)
        & ~r.str.contains(CLOSED_END)
        & (_words(tail) >= cfg.truncated_tail_words)
        # written in sentences: somewhere a sentence ends, so the last one should too
        & r.str.contains(r"[.!?][\"')\]”’]*\s")
    )
    return odd_fences | unbalanced | ellipsis | open_punct | dangling | unterminated


def _non_english(text: pl.Expr, cfg: QualityConfig) -> pl.Expr:
    """Two cheap rules, no language-ID model:
    - script: fewer than `latin_share_min` of the letters are Latin (Chinese, Cyrillic, Arabic, ...),
      judged on texts with at least `language_min_letters` letters;
    - stopwords: a Latin-script text of at least `stopword_min_words` words with at least
      `foreign_stopwords_min` French/Spanish/German/Italian/Portuguese function words and more of them
      than English ones; code is not judged by this rule (its identifiers are no language).
    Limits: other Latin-script languages (Dutch, Polish, Turkish, Vietnamese, ...) and short texts
    pass; a translation task whose target is another language is flagged (correctly: its output is
    not English); English text quoting a little foreign script passes."""
    letters = text.str.count_matches(r"\p{L}")
    latin = text.str.count_matches(r"\p{Latin}")
    script = (letters >= cfg.language_min_letters) & (latin < cfg.latin_share_min * letters)
    words = text.str.to_lowercase().str.extract_all(r"[\p{L}']+")
    english = words.list.eval(pl.element().is_in(ENGLISH_STOPWORDS)).list.sum()
    foreign = words.list.eval(pl.element().is_in(FOREIGN_STOPWORDS)).list.sum()
    stop = ((words.list.len() >= cfg.stopword_min_words) & (foreign >= cfg.foreign_stopwords_min)
            & (foreign > english) & ~text.str.contains(CODE_LIKE))
    return script | stop


def _copy_form(expr: pl.Expr) -> pl.Expr:
    """The form compared by output_in_instruction: NFKC, line ends and trailing spaces unified, ends
    trimmed. Case, punctuation and indentation are kept: "fix the syntax/indentation/capitalisation"
    tasks differ from their prompt in exactly those."""
    return (expr.str.normalize("NFKC").str.replace_all(r"\r\n?", "\n").str.replace_all(r"[ \t]+\n", "\n")
            .str.strip_chars())


def _drop_strings(r: pl.Expr, *, single_quotes: bool) -> pl.Expr:
    """`r` without one-line quoted strings ("...", “...”, and '...' if `single_quotes`)."""
    if single_quotes:
        r = r.str.replace_all(r"'(?:[^'\\\n]|\\.)*'", "''")
    return r.str.replace_all(r'"(?:[^"\\\n]|\\.)*"|“[^”\n]*”', '""')


def _refusal_text(r: pl.Expr) -> pl.Expr:
    """The response as refusal patterns read it: curly apostrophes straightened, and quoted strings
    dropped (a refusal quoted in a story, or "I am an AI language model" as test data in code, is
    not the response refusing). Single-quoted strings only in code: in prose ' is an apostrophe."""
    folded = r.str.replace_all(r"[’‘´]", "'")
    return (pl.when(r.str.contains(CODE_LIKE)).then(_drop_strings(folded, single_quotes=True))
            .otherwise(_drop_strings(folded, single_quotes=False)))


def record_flags(frame: pl.DataFrame, cfg: QualityConfig) -> pl.DataFrame:
    """The per-record columns for `frame` (needs `id`, `prompt`, `response`), one row per row."""
    base = frame.select(
        "id",
        prompt=pl.col("prompt").fill_null(""),
        response=pl.col("response").fill_null("").str.replace_all("\r\n", "\n"),
    ).with_columns(
        r=pl.col("response").str.strip_chars_end(),
        r_fold=_refusal_text(pl.col("response")),
    )
    base = base.hstack(repetition_columns(base["r"], cfg.repetition_ngram, cfg.line_min_chars))
    stripped = pl.col("r").str.strip_chars()
    lang_col = {"response": "response", "prompt": "prompt", "text": "text"}[cfg.language_column]
    lang_text = (pl.col("prompt") + "\n\n" + pl.col("response")) if lang_col == "text" else pl.col(lang_col)
    out = base.with_columns(
        _head=_head_words(pl.col("response")),
        first_word=_openers(pl.col("prompt").str.slice(0, 80), 1),
    ).with_columns(
        **{f"opener_{n}": _openers(pl.col("response"), n, pl.col("_head")) for n in (1, 2, 3)},
        norm_r=_copy_form(pl.col("response")),
        norm_p=_copy_form(pl.col("prompt")),
    ).with_columns(
        quality_empty_output=stripped == "",
        quality_short_output=(stripped != "") & ((_words(stripped) < cfg.short_min_words)
                                                 | (stripped.str.len_chars() < cfg.short_min_chars)),
        quality_output_in_instruction=(pl.col("norm_r") != "") & (
            (pl.col("norm_r") == pl.col("norm_p"))
            | ((_words(pl.col("norm_r")) >= cfg.copy_min_words)
               & pl.col("norm_p").str.contains(pl.col("norm_r"), literal=True))),
        quality_refusal=_any_regex(pl.col("r_fold"), cfg.refusal_patterns),
        quality_truncated=(stripped != "") & _truncated(pl.col("r"), cfg),
        quality_repetitive=((pl.col("quality_repetition") >= cfg.repetition_threshold)
                            & (pl.col("_n_grams") >= cfg.repetition_min_ngrams))
        | (pl.col("_top_line") >= cfg.line_repeat_limit),
        quality_non_english=(_non_english(lang_text, cfg) if (cfg.expected_language or "").lower() == "en"
                             else pl.lit(False)),
    )
    cols = [f"quality_{f}" for f in FLAGS]
    return out.select(
        "id", *[pl.col(c).fill_null(False) for c in cols],
        pl.any_horizontal(cols).fill_null(False).alias("quality_flagged"),
        pl.concat_str([pl.when(pl.col(f"quality_{f}")).then(pl.lit(f)) for f in FLAGS],
                      separator=",", ignore_nulls=True).fill_null("").alias("quality_flags"),
        "quality_repetition",
        *[pl.col(c) for c in OPENER_COLUMNS],
    )


# ---- style homogeneity ---------------------------------------------------------------------------

def _head_words(texts: pl.Expr) -> pl.Expr:
    """The first three words (lower case, punctuation dropped) as a list. Only the head of a text
    is tokenised: the Unicode word regex is the slow part of style homogeneity on big versions."""
    return texts.str.slice(0, 160).str.to_lowercase().str.extract_all(r"[\p{L}\p{N}']+").list.head(3)


def _openers(texts: pl.Expr, n: int, words: pl.Expr | None = None) -> pl.Expr:
    """The first `n` words (80 characters at most, for the report) or null when there are fewer;
    `words` can pass `_head_words(texts)` computed once for several n."""
    words = _head_words(texts) if words is None else words
    return pl.when(words.list.len() >= n).then(words.list.head(n).list.join(" ").str.slice(0, 80))


OPENER_COLUMNS = ("opener_1", "opener_2", "opener_3", "first_word")


def style_homogeneity(records: pl.DataFrame, cfg: QualityConfig, openers: pl.DataFrame | None = None,
                      empty: int | None = None) -> tuple[dict[str, Any], pl.Series, pl.DataFrame]:
    """(summary figures, quality_common_opener per row, top openers frame). `openers` (the
    OPENER_COLUMNS, one row per record row) and `empty` (how many responses are empty or blank)
    come from the per-record cache when there is one; without them they are computed here."""
    if openers is None:
        openers = records.select(pl.col("response").fill_null(""), pl.col("prompt").fill_null("")).with_columns(
            _head=_head_words(pl.col("response")),
            first_word=_openers(pl.col("prompt").str.slice(0, 80), 1)).select(
            *[_openers(pl.col("response"), n, pl.col("_head")).alias(f"opener_{n}") for n in (1, 2, 3)],
            "first_word")
    frame = openers.select([pl.col(f"opener_{n}").alias(f"o{n}") for n in (1, 2, 3)] + ["first_word"])
    if empty is None:
        empty = int((records["response"].fill_null("").str.strip_chars() == "").sum())
    answered = max(records.height - empty, 1)
    figures: dict[str, Any] = {"responses": answered}
    tops = []
    all_counts = {}
    for n in (1, 2, 3):
        all_counts[n] = frame.get_column(f"o{n}").drop_nulls().value_counts(name="count").rename({f"o{n}": "opener"})
        # the top 10 (ties by opener): top_k rather than sorting every distinct opener
        counts = all_counts[n].top_k(10, by=["count", "opener"], reverse=[False, True]).sort(
            ["count", "opener"], descending=[True, False])
        tops.append(counts.head(10).with_columns(words=pl.lit(n), share=pl.col("count") / answered))
        top = counts.row(0, named=True) if counts.height else {"opener": None, "count": 0}
        figures[f"top_opener_{n}_word{'s' if n > 1 else ''}"] = {
            "opener": top["opener"], "count": int(top["count"]), "share": top["count"] / answered}
    top_openers = pl.concat(tops, how="vertical_relaxed").select(
        pl.col("words").cast(pl.Int64), "opener", pl.col("count").cast(pl.Int64), "share")
    figures["top_openers"] = [{"opener": r["opener"], "count": r["count"], "share": round(r["share"], 4)}
                              for r in top_openers.filter(pl.col("words") == 3).iter_rows(named=True)]
    first = frame["first_word"].drop_nulls().value_counts(name="count").top_k(
        1, by=["count", "first_word"], reverse=[False, True])
    prompts = max(int(frame["first_word"].is_not_null().sum()), 1)
    figures["instruction_top_first_word"] = {
        "word": first["first_word"][0] if first.height else None,
        "count": int(first["count"][0]) if first.height else 0,
        "share": (int(first["count"][0]) if first.height else 0) / prompts}
    n = min(max(cfg.opener_words, 1), 3)
    opener = frame.get_column(f"o{n}")
    common = all_counts[n].filter((pl.col("count") > cfg.common_opener_share * answered)
                                  & (pl.col("count") >= cfg.opener_min_count)).get_column("opener")
    figures["common_openers"] = sorted(common.to_list())
    flag = opener.is_in(common.implode()).fill_null(False).alias("quality_common_opener")
    figures["common_opener_records"] = int(flag.sum())
    return figures, flag, top_openers


# ---- the auditor ---------------------------------------------------------------------------------

class Quality(Auditor):
    """Per-record quality flags (cached by record id) and the version's style homogeneity."""

    name = "quality"
    Config = QualityConfig
    revision = 2  # 2: the per-record cache also holds the openers

    def validate(self) -> None:
        cfg: QualityConfig = self.config
        if cfg.language_column not in ("response", "prompt", "text"):
            raise AssayError(f"quality: language_column must be response, prompt or text, not {cfg.language_column!r}")
        if (cfg.expected_language or "").lower() not in ("", "en"):
            raise AssayError(f"quality: expected_language {cfg.expected_language!r} is not supported: only 'en' "
                             "(or empty to switch the check off)")
        for pattern in cfg.refusal_patterns:
            try:
                pl.select(pl.lit("").str.contains("(?i)" + pattern))
            except pl.exceptions.PolarsError as exc:
                raise AssayError(f"quality: invalid refusal pattern {pattern!r}: {exc}") from None

    def map_columns(self) -> list[str]:
        return ["prompt", "response"]

    def map(self, batch: pl.DataFrame) -> pl.DataFrame:
        return record_flags(batch, self.config)

    def reduce(self, mapped: pl.DataFrame, rows: Rows, ctx: AuditContext) -> AuditResult:
        cfg: QualityConfig = self.config
        # the openers come from the per-record results, so only the row count is read from `mapped`
        style, common, top_openers = style_homogeneity(mapped, cfg, mapped.select(OPENER_COLUMNS),
                                                       int(mapped["quality_empty_output"].sum()))
        columns = mapped.drop(*OPENER_COLUMNS).with_columns(common)
        total = mapped.height
        summary: dict[str, Any] = {
            "records": total,
            "flagged_records": int(columns["quality_flagged"].sum()),
            "flagged_rate": float(columns["quality_flagged"].sum()) / total if total else 0.0,
            "flags": {f: {"count": int(columns[f"quality_{f}"].sum()),
                          "rate": float(columns[f"quality_{f}"].sum()) / total if total else 0.0} for f in FLAGS},
            "mean_repetition": float(columns["quality_repetition"].mean() or 0.0),
            "style": style,
            "examples": self._examples(rows, columns, cfg.examples),
            "cache": ctx.map_cache.get(self.name, {"hits": 0, "misses": 0}),
        }
        return AuditResult(columns=columns, summary=summary, details={"openers": top_openers})

    @staticmethod
    def _examples(rows: Rows, columns: pl.DataFrame, k: int) -> dict[str, list[dict[str, Any]]]:
        flagged = columns.select([f"quality_{f}" for f in (*FLAGS, "common_opener")]).with_row_index("pos")
        out = {}
        for f in (*FLAGS, "common_opener"):
            positions = flagged.filter(pl.col(f"quality_{f}")).head(k)["pos"].to_numpy()
            texts = rows.at(positions, ["prompt", "response"])
            out[f] = [{"pos": int(pos), "prompt": _clip(r["prompt"], 160), "response": _clip(r["response"], 240)}
                      for pos, r in zip(positions, texts.iter_rows(named=True))]
        return out


def _clip(text: str | None, n: int) -> str:
    text = text or ""
    return text if len(text) <= n else text[: n - 1] + "…"
