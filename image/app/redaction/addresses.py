"""Street addresses: a building number, capitalised street words, a suffix from the USPS lexicon,
then what usually follows (unit, city, state, ZIP or a UK postcode), as one span.

Why a regex and not NER: spaCy's small model tags "1600 Amphitheatre Parkway" as a CARDINAL and a
FAC at best and never the city/ZIP tail; a user wants the whole address gone, so the pattern
reaches for the tail (", Mountain View, CA 94043") and covers it in the same span.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from .scan import Scan
from .validators import lower_same, matches_at, matches_from, trie_regex

# USPS Publication 28, appendix C1 (street suffixes), plus the common abbreviations and the
# British ones (Close, Mews, Gardens...). Matched case-insensitively, "." optional.
_SUFFIXES = """
Alley Aly Annex Arcade Avenue Ave Av Bayou Beach Bend Bluff Bluffs Bottom Boulevard Blvd Branch
Bridge Brook Brooks Burg Burgs Bypass Camp Canyon Cape Causeway Center Centre Centers Circle Cir
Circles Cliff Cliffs Close Club Common Commons Concourse Corner Corners Course Court Ct Courts Cove
Coves Creek Crescent Cres Crest Crossing Crossroad Curve Dale Dam Divide Drive Dr Drives Estate
Estates Expressway Expy Extension Ext Extensions Fall Falls Ferry Field Fields Flat Flats Ford
Fords Forest Forge Forges Fork Forks Fort Freeway Fwy Garden Gardens Gdns Gateway Glen Glens Green
Greens Grove Groves Harbor Harbour Harbors Haven Heights Hts Highway Hwy Hill Hills Hollow Inlet
Island Islands Isle Junction Junctions Key Keys Knoll Knolls Lake Lakes Land Landing Lane Ln Light
Lights Loaf Lock Locks Lodge Loop Mall Manor Manors Meadow Meadows Mews Mill Mills Mission
Motorway Mount Mountain Mountains Neck Orchard Oval Overpass Park Parks Parkway Pkwy Parkways Pass
Passage Path Pike Pine Pines Place Pl Plain Plains Plaza Point Points Port Ports Prairie Radial
Ramp Ranch Rapid Rapids Rest Ridge Ridges River Road Rd Roads Route Rte Row Rue Run Shoal Shoals
Shore Shores Skyway Spring Springs Spur Spurs Square Sq Squares Station Stravenue Stream Street St
Streets Summit Terrace Ter Throughway Trace Track Trafficway Trail Trl Tunnel Turnpike Underpass
Union Unions Valley Valleys Via Viaduct View Views Village Villages Ville Vista Walk Walks Wall Way
Ways Well Wells Wharf Wynd Yard
"""


_SUFFIX = trie_regex(sorted(set(_SUFFIXES.split())))
_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM"
    "|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|AS|GU|MP|PR|VI|UM|FM|MH|PW"
)
_STATE_NAMES = (
    "Alabama|Alaska|Arizona|Arkansas|California|Colorado|Connecticut|Delaware|Florida|Georgia|Hawaii"
    "|Idaho|Illinois|Indiana|Iowa|Kansas|Kentucky|Louisiana|Maine|Maryland|Massachusetts|Michigan"
    "|Minnesota|Mississippi|Missouri|Montana|Nebraska|Nevada|New Hampshire|New Jersey|New Mexico"
    "|New York|North Carolina|North Dakota|Ohio|Oklahoma|Oregon|Pennsylvania|Rhode Island"
    "|South Carolina|South Dakota|Tennessee|Texas|Utah|Vermont|Virginia|Washington|West Virginia"
    "|Wisconsin|Wyoming"
)
# A code or a name, as one trie: tried after every city candidate of every address tail.
_STATE = trie_regex(_STATES.split("|") + _STATE_NAMES.split("|"), fold=False)
_UK_POSTCODE = r"(?:[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2})"
_WORD = r"(?:[A-Z][A-Za-z'’.-]*+|\d{1,3}(?:st|nd|rd|th)|(?:de|la|del|von|van|of|the)\b)"
_CITY = r"(?:[A-Z][A-Za-z'’.-]+(?:[ -][A-Z][A-Za-z'’.-]+){0,3})"
_SEP = r"(?:,[ \t]*\n?[ \t]*|[ \t]*\n[ \t]*|[ \t]+)"
_UNIT = (
    r"(?:(?:Apt|Apartment|Suite|Ste|Unit|Room|Rm|Floor|Fl|Flat|Bldg|Building|Studio|Dept|Lot|Box)\.?"
    r"[ \t]*\#?[ \t]*[A-Za-z0-9][A-Za-z0-9-]{0,5}\b|\#[ \t]*[A-Za-z0-9][A-Za-z0-9-]{0,5}\b)"
)
_DIRECTION = r"(?:[NSEW]\.?|North|South|East|West|NE|NW|SE|SW)"
# The tail: "City, ST 12345", "City, State 12345-6789", "City\nPOSTCODE", "POSTCODE", ", City."
_TAIL = (
    rf"(?:{_SEP}{_CITY},?[ \t]+(?:{_STATE})\b\.?(?:[ \t]+\d{{5}}(?:-\d{{4}})?)?"
    rf"|{_SEP}(?:{_CITY}{_SEP})?{_UK_POSTCODE}\b"
    rf"|,[ \t]*{_CITY}(?=[.;!?)\n]|$))"
)
_SPELLED = r"(?:One|Two|Three|Four|Five|Six|Seven|Eight|Nine|Ten|Eleven|Twelve|Twenty|Thirty|Fifty|Hundred)"
# After the building number: direction, street words, the suffix, a unit, then the tail.
_STREET_REST = (
    rf",?[ \t]++(?:{_DIRECTION}[ \t]++)?(?:{_WORD}[ \t]++){{0,4}}(?i:(?:{_SUFFIX})\b)\.?"
    rf"(?:[ \t]+(?:NE|NW|SE|SW|N|S|E|W)\b\.?)?"
    rf"(?:,?[ \t]*{_UNIT})?(?:{_TAIL})?"
)
# Three shapes of one address grammar, each starting with what re can skip to fast (a pattern
# that starts with a look-behind or look-ahead is tried at every character; one that starts with
# a character class or a literal is jumped to): "1600 ...", "One Apple Park Way ...", "Apt 4, 12 ...".
# "933 watson street": lower case is accepted only for one or two words before a common suffix,
# so "walked 5 blocks down the street" stays prose. Same pass as the numbered form (one scan of
# the digits instead of two), tried first: "465 wells road" must not stop at the suffix "wells".
_LOWER_REST = (
    r"[a-z]?[ \t]++(?:[a-z][a-z'-]++[ \t]++){1,2}"
    r"(?:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|place|pl|way)\b\.?"
    rf"(?:{_TAIL})?"
)
# The look-ahead is implied by both shapes (after the number and its separator comes a letter or an
# ordinal: a street word, a direction or the suffix) and fails in a few steps where the full
# pattern backtracks through every alternative: after the digit runs of phones, cards, IBANs.
_ADDRESS = re.compile(
    rf"\d(?<![\w-]\d)\d{{0,5}}+(?=[A-Za-z]?(?:-\d{{1,6}}+[A-Za-z]?)?,?[ \t]++(?:[A-Za-z]|\d{{1,3}}(?:st|nd|rd|th)))"
    rf"(?:{_LOWER_REST}|[A-Za-z]?(?:-\d{{1,6}}+[A-Za-z]?)?{_STREET_REST})"
)
_ADDRESS_SPELLED = re.compile(rf"{_SPELLED}{_STREET_REST}")
_ADDRESS_UNIT_FIRST = re.compile(rf"{_UNIT}{_SEP}(?:\d{{1,6}}[A-Za-z]?(?:-\d{{1,6}}[A-Za-z]?)?)?{_STREET_REST}")
_SPELLED_WORDS = ("One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten", "Eleven",
                  "Twelve", "Twenty", "Thirty", "Fifty", "Hundred")
_UNIT_WORDS = ("Apt", "Apartment", "Suite", "Ste", "Unit", "Room", "Rm", "Floor", "Fl", "Flat", "Bldg",
               "Building", "Studio", "Dept", "Lot", "Box", "#")
# Continental layout: the street (one word ending in a street noun) before the number, then an
# optional postcode and city: "Hauptstraße 5, 10115 Berlin", "Laura-Scheuermann-Allee 88". The
# regex only reads "Word 12"; the street noun is checked first, with str.endswith before each
# digit that follows a blank (a suffix alternation tried at every letter of every capitalised
# word cost more than all other address patterns; the regex tried at every capital cost a tenth
# of all detection on dense text).
_CONTINENTAL = re.compile(
    r"([A-ZÄÖÜ](?<![\w-].)[\w'.-]*+)[ \t]+\d{1,4}[a-z]?\b"
    r"(?:,?[ \t]*\n?[ \t]*\d{4,5}[ \t]+[A-ZÄÖÜ][\w'-]+(?:[ \t](?:am|an|ob|der|die|dem|den|im|in|bei|vor|vorm|zum|zur)(?=[ \t](?:[A-ZÄÖÜ]|d[ei][emnr]?\b))|[ \t][A-ZÄÖÜ(][\w()'-]+){0,4})?"
)
_CAP_BEFORE = re.compile(r"(?<![\w-])([A-ZÄÖÜ][\w'-]+)[ \t]$")
_CONTINENTAL_NOUNS = (
    "straße", "strasse", "str.", "weg", "gasse", "allee", "platz", "ring", "damm", "ufer", "chaussee",
    "pfad", "markt", "straat", "laan", "gracht", "plein", "kade", "steeg",
)


_LONGEST_NOUN = max(map(len, _CONTINENTAL_NOUNS))
# The last two characters of each noun, lower case: the word before a number must end with one
# of them. A set look-up rejects almost every number in prose ("card 4111", "Suite 811") before
# the 19-suffix endswith.
_NOUN_ENDS = frozenset(noun[-2:] for noun in _CONTINENTAL_NOUNS)
_CAPITALS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÜ")  # _CONTINENTAL's first character


def _street_word(c: str) -> bool:
    return c.isalnum() or c in "_'.-"  # [\w'.-]: the characters of _CONTINENTAL's street word


def _continental(scan: Scan) -> Iterator[tuple[int, int]]:
    text, low = scan.text, scan.low
    done = 0  # where the last match ended: matches do not overlap
    for digit in scan.digits_after_blank():
        end = digit - 1  # of the word before the blanks
        while end > 0 and text[end - 1] in " \t":
            end -= 1
        if end <= done:
            continue
        if low is not None:
            if low[end - 2 : end] not in _NOUN_ENDS or not low.endswith(_CONTINENTAL_NOUNS, 0, end):
                continue
        elif not text[max(0, end - _LONGEST_NOUN) : end].lower().endswith(_CONTINENTAL_NOUNS):
            continue
        m = _continental_at(text, end, done)
        if m is not None:
            # a capitalised word before belongs to the street ("Hans Georg-Conradi-Allee 27")
            before = _CAP_BEFORE.search(text, max(0, m.start() - 40), m.start())
            yield (before.start(1) if before else m.start()), m.end()
            done = m.end()


def _continental_at(text: str, end: int, done: int) -> re.Match[str] | None:
    """The _CONTINENTAL match whose street word ends at `end`, if any: it starts at the first
    capital of the word that no word character or "-" precedes (where finditer would have
    started it; from there the word is read to its end whatever the start)."""
    start = end
    while start > done and _street_word(text[start - 1]):
        start -= 1
    for p in range(start, end):
        if text[p] in _CAPITALS and (p == 0 or not (text[p - 1].isalnum() or text[p - 1] in "_-")):
            return _CONTINENTAL.match(text, p)
    return None


_PO_BOX = re.compile(
    rf"\b(?:P\.?[ \t]?O\.?[ \t]*Box|Post[ \t]+Office[ \t]+Box)[ \t]+\d{{1,8}}(?:{_TAIL})?", re.IGNORECASE
)
# Faker-style US military addresses: "PSC 1234, Box 5678\nAPO AA 12345", "USNS Ship\nFPO AE 12345".
_MILITARY = re.compile(
    r"\b(?:(?:PSC|Unit|CMR)[ \t]+\d{1,5},?[ \t]+Box[ \t]+\d{1,5}|(?:USNS|USNV|USS|USCGC)[ \t]+[A-Z][a-z]+(?:[ \t]+[A-Z][a-z]+)?)"
    r"[ \t]*[,\n]?[ \t]*(?:APO|FPO|DPO)[ \t]+A[AEP][ \t]+\d{5}\b"
)
# Where the spelled and unit-first shapes can start, in one pass: every word starts with a capital
# (or is "#") followed by lower case, so no word starts inside another.
# (A trie of literals: re skips to their first characters, then reads one branch per character; a
# flat alternation would try its 33 words one by one at every capital.)
_SPELLED_OR_UNIT = re.compile(trie_regex(list(_SPELLED_WORDS + _UNIT_WORDS), fold=False))
_SPELLED_SET = frozenset(_SPELLED_WORDS)


def _spelled_and_unit_starts(text: str) -> tuple[list[int], list[int]]:
    spelled: list[int] = []
    units: list[int] = []
    for m in _SPELLED_OR_UNIT.finditer(text):
        (spelled if m.group() in _SPELLED_SET else units).append(m.start())
    return spelled, units


# Where _PO_BOX can start, in the lower-case copy: "P.O. Box", "PO Box", "Post Office Box". Each
# match holds one "box", after its start: the starts are looked for between one "box" and the next.
_PO_BOX_START = re.compile(r"p[o. \t]")


def _po_box_starts(low: str) -> Iterator[int]:
    after = 0
    box = low.find("box")
    while box != -1:
        for m in _PO_BOX_START.finditer(low, after, box):
            yield m.start()
        after = box + 1
        box = low.find("box", after)


_MILITARY_STARTS = ("PSC", "Unit", "CMR", "US")
_POSTCODE_ALONE = re.compile(r"[A-Z](?<![\w-][A-Z])[A-Z]?\d[A-Z\d]?\s*\d[A-Z]{2}(?![\w-])")


def find_addresses(source: str | Scan) -> Iterator[tuple[int, int, str]]:
    """Address spans; two pieces separated only by a comma or spaces ("..., South Georgia" then
    "L72 5PQ") are one address, so the separator is covered too. A Scan of the text, when the
    caller has one, shares the candidate starts that other finders read too."""
    scan = source if isinstance(source, Scan) else Scan(source, lower_same(source))
    text = scan.text
    found = sorted(_pieces(scan))
    i = 0
    while i < len(found):
        s, e = found[i]
        j = i + 1
        while j < len(found) and found[j][0] <= e + 3 and not text[e : found[j][0]].strip(", \t\n"):
            e = max(e, found[j][1])
            j += 1
        yield s, e, "ADDRESS"
        i = j


def _bounded(text: str, found: Iterable[re.Match[str]]) -> Iterator[tuple[int, int]]:
    for m in found:
        if m.start() == 0 or not (text[m.start() - 1].isalnum() or text[m.start() - 1] in "_-"):
            yield m.start(), m.end()


def _pieces(scan: Scan) -> Iterator[tuple[int, int]]:
    text, low = scan.text, scan.low
    for m in matches_from(text, _ADDRESS, scan.address_numbers()):
        yield m.start(), m.end()
    # Literal-first shapes: the word boundary before them is checked here (a look-behind first
    # would make re try every character).
    spelled, units = _spelled_and_unit_starts(text)
    yield from _bounded(text, matches_from(text, _ADDRESS_SPELLED, spelled))
    yield from _bounded(text, matches_from(text, _ADDRESS_UNIT_FIRST, units))
    yield from _continental(scan)
    if low is None:
        for m in _PO_BOX.finditer(text):
            yield m.start(), m.end()
    elif "box" in low:
        for m in matches_from(text, _PO_BOX, _po_box_starts(low)):
            yield m.start(), m.end()
    if "PO " in text:
        for m in matches_at(text, _MILITARY, _MILITARY_STARTS):
            yield m.start(), m.end()
    for m in matches_from(text, _POSTCODE_ALONE, scan.capitals_then_digit_after_gap()):
        # A lone UK postcode needs the space ("SW1A 1AA"): without it "A1B2CD" would be too eager.
        if " " in m.group(0):
            yield m.start(), m.end()
