"""A labelled PII corpus made with faker (seeded: the same cases every run).

    cd image && .venv/bin/python redaction_suites/corpus.py --cases 10000 --out /tmp/pii_corpus.jsonl

A case is a short conversation (1-3 texts) mixing entities in realistic sentences; every PII value
is labelled with its character span and entity. PII-free prompts (coding and general questions
with numbers, versions, hashes, URLs, product names) are generated beside them: the detector must
leave those alone. evaluate.py imports generate() and needs no file.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import string
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from faker import Faker

Label = tuple[int, int, str]


@dataclass
class Case:
    texts: list[str]
    labels: list[list[Label]]
    pii_free: bool = False


@dataclass
class _Builder:
    """Builds one text from pieces; a piece given an entity becomes a label."""

    parts: list[str] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    pos: int = 0

    def add(self, s: str, entity: str | None = None) -> None:
        if entity:
            self.labels.append((self.pos, self.pos + len(s), entity))
        self.parts.append(s)
        self.pos += len(s)

    def fill(self, template: str, **values: tuple[str, str | None]) -> None:
        """template with {slots}; each slot is (text, entity or None)."""
        rest = template
        while "{" in rest:
            pre, _, after = rest.partition("{")
            slot, _, rest = after.partition("}")
            self.add(pre)
            text, entity = values[slot]
            self.add(text, entity)
        self.add(rest)

    def text(self) -> str:
        return "".join(self.parts)


class _Gen:
    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.fakers = {loc: Faker(loc) for loc in ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL")}
        for i, f in enumerate(self.fakers.values()):
            f.seed_instance(seed + i)
        self.f = self.fakers["en_US"]

    def pick(self, seq):  # type: ignore[no-untyped-def]
        return self.r.choice(seq)

    # ------------------------------------------------------------------ values
    def person(self) -> tuple[str, str, str]:
        loc = self.pick(["en_US"] * 6 + ["en_GB"] * 2 + ["de_DE", "fr_FR", "es_ES", "it_IT"])
        f = self.fakers[loc]
        first, last = f.first_name(), f.last_name()
        return first, last, f"{first} {last}"

    def email(self) -> str:
        return self.pick([self.f.email, self.f.company_email, self.f.free_email, self.fakers["en_GB"].email])()

    def phone(self) -> str:
        r = self.r
        d = lambda n: "".join(str(r.randint(0, 9)) for _ in range(n))  # noqa: E731
        area = f"{r.randint(2, 9)}{d(2)}"
        exch = f"{r.randint(2, 9)}{d(2)}"
        return self.pick([
            lambda: self.f.phone_number(),
            lambda: self.fakers["en_GB"].phone_number(),
            lambda: f"+1 ({area}) {exch}-{d(4)} ext. {r.randint(1, 999)}",
            lambda: f"001-{area}-{exch}-{d(4)}",
            lambda: f"+44 20 {d(4)} {d(4)}",
            lambda: f"{area}.{exch}.{d(4)}",
            lambda: f"+49 30 {d(7)}",
            lambda: f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}",
            lambda: f"({area}) {exch}-{d(4)}",
            lambda: f"+1-{area}-{exch}-{d(4)} x{d(3)}",
        ])()

    def card(self) -> str:
        num = self.f.credit_card_number()
        style = self.r.random()
        if style < 0.4 and len(num) == 16:
            sep = self.pick([" ", "-"])
            return sep.join(num[i : i + 4] for i in range(0, 16, 4))
        return num

    def iban(self) -> str:
        loc = self.pick(["en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL"])
        num = self.fakers[loc].iban()
        if self.r.random() < 0.4:
            return " ".join(num[i : i + 4] for i in range(0, len(num), 4))
        return num

    def ip(self) -> str:
        return self.pick([self.f.ipv4_public, self.f.ipv4_private, self.f.ipv6, lambda: self.f.ipv6().upper()])()

    def mac(self) -> str:
        m = self.f.mac_address()
        return self.pick([m, m.upper(), m.replace(":", "-"), m.upper().replace(":", "-")])

    def dob(self) -> str:
        d = self.f.date_of_birth(minimum_age=18, maximum_age=90)
        fmt = self.pick(["%m/%d/%Y", "%Y-%m-%d", "%d.%m.%Y", "%B %d, %Y", "%d %B %Y", "%b %d, %Y", "%d/%m/%Y"])
        return d.strftime(fmt)

    def url_cred(self) -> str:
        scheme = self.pick(["postgres", "postgresql", "mysql", "mongodb", "redis", "https", "ftp", "amqp"])
        user = self.f.user_name()
        pw = self.f.password(length=self.r.randint(8, 16), special_chars=False)
        host = self.pick([self.f.domain_name(), self.f.ipv4_private(), f"db.{self.f.domain_word()}.internal"])
        port = self.pick(["", f":{self.r.randint(1000, 65000)}"])
        return f"{scheme}://{user}:{pw}@{host}{port}"

    def _rand(self, alphabet: str, n: int) -> str:
        return "".join(self.r.choice(alphabet) for _ in range(n))

    def secret(self) -> str:
        an = string.ascii_letters + string.digits
        up = string.ascii_uppercase + string.digits
        jwt_part = lambda n: base64.urlsafe_b64encode(self.r.randbytes(n)).decode().rstrip("=")  # noqa: E731
        return self.pick([
            lambda: "sk-" + self._rand(an, 48),
            lambda: "sk-proj-" + self._rand(an + "-_", 64),
            lambda: "ghp_" + self._rand(an, 36),
            lambda: "github_pat_" + self._rand(an + "_", 60),
            lambda: "xoxb-" + "-".join(self._rand(string.digits, 12) for _ in range(2)) + "-" + self._rand(an, 24),
            lambda: "AKIA" + self._rand(up, 16),
            lambda: "AIza" + self._rand(an + "-_", 35),
            lambda: "hf_" + self._rand(an, 34),
            lambda: "glpat-" + self._rand(an + "-_", 20),
            lambda: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ" + jwt_part(48) + "." + jwt_part(32),
            lambda: "-----BEGIN RSA PRIVATE KEY-----\n"
            + "\n".join(base64.b64encode(self.r.randbytes(48)).decode() for _ in range(4))
            + "\n-----END RSA PRIVATE KEY-----",
            lambda: base64.b64encode(self.r.randbytes(30)).decode(),
        ])()

    def address(self) -> str:
        r = self.r
        return self.pick([
            lambda: self.f.address().replace("\n", self.pick([", ", "\n"])),
            lambda: self.f.street_address(),
            lambda: self.f.street_address() + ", " + self.f.city() + ", " + self.f.state_abbr() + " " + self.f.zipcode(),
            lambda: self.fakers["en_GB"].address().replace("\n", ", "),
            lambda: f"{r.randint(1, 250)}{self.pick(['', 'B', 'A'])} {self.fakers['en_GB'].last_name()} "
            f"{self.pick(['Street', 'Road', 'Lane', 'Close', 'Avenue'])}, {self.fakers['en_GB'].city()} "
            f"{self.fakers['en_GB'].postcode()}",
            lambda: f"{r.randint(10, 9999)} {self.f.last_name()} {self.pick(['St', 'Ave', 'Blvd', 'Rd', 'Dr'])}. "
            f"Apt {r.randint(1, 40)}{self.pick(['A', 'B', 'C', ''])}, {self.f.city()}, {self.f.state_abbr()} {self.f.zipcode()}",
            # Harder shapes than faker's: a spelled-out number, lower case, German and British
            # layouts (street before number, flat before building).
            lambda: f"One {self.f.last_name()} {self.pick(['Way', 'Plaza', 'Park Way'])}, {self.f.city()}, "
            f"{self.f.state_abbr()} {self.f.zipcode()}",
            lambda: f"{r.randint(1, 999)} {self.f.last_name().lower()} {self.pick(['street', 'avenue', 'road'])}",
            lambda: f"{self.fakers['de_DE'].street_name()} {r.randint(1, 120)}, {self.fakers['de_DE'].postcode()} "
            f"{self.fakers['de_DE'].city()}",
            lambda: f"Flat {r.randint(1, 30)}, {r.randint(1, 200)} {self.fakers['en_GB'].last_name()} "
            f"{self.pick(['High St', 'Road', 'Mews'])}, {self.fakers['en_GB'].city()} {self.fakers['en_GB'].postcode()}",
        ])()


_FILLER = [
    "Thanks in advance for the help.",
    "Please keep the tone friendly but short.",
    "We need this before the end of the quarter.",
    "Let me know if anything is unclear.",
    "The deadline moved to next week.",
    "I already tried restarting the service twice.",
    "Keep it under 200 words.",
    "This is for the onboarding checklist.",
]

# template, slot generator name; {v} is the value, {first}/{last} for names.
_TEMPLATES: dict[str, list[str]] = {
    "PERSON": [
        "Please draft a follow-up email to {v} about the delayed shipment.",
        "{v} will present the roadmap at Thursday's all-hands.",
        "Can you summarize the feedback that {v} left on the design doc?",
        "My manager, {v}, asked me to prepare the slides.",
        "Meeting notes: {v} agreed to own the migration plan.",
        "Write a short bio for our new hire {v}.",
        "I had a call with {v} yesterday and they sounded worried.",
        "Forward the contract to {v} once legal approves it.",
        "Dear {v}, thank you for your application.",
        "The ticket was escalated by {v} on Monday.",
    ],
    "EMAIL": ["You can reach me at {v} any time.", "Send the invoice to {v} please.", "Contact: {v}"],
    "PHONE": ["Call me back on {v} after 5pm.", "My mobile is {v}.", "Phone: {v}", "The front desk number is {v}."],
    "CREDIT_CARD": ["Charge it to my card {v}, expiry 09/27.", "Card number: {v}", "I paid with {v} but got no receipt."],
    "IBAN": ["Please wire the refund to IBAN {v}.", "Our bank account is {v}.", "IBAN: {v}"],
    "US_SSN": ["My social security number is {v}.", "SSN: {v}", "The form asks for the SSN {v} again."],
    "IP_ADDRESS": ["The server at {v} keeps timing out.", "Whitelist {v} in the firewall.", "ssh into {v} and check the logs."],
    "MAC_ADDRESS": ["The device MAC is {v}.", "Block {v} on the router.", "Reserve a lease for {v}."],
    "DATE_OF_BIRTH": ["I was born on {v} in a small town.", "DOB: {v}", "Date of birth: {v}", "The patient (born {v}) reported pain."],
    "URL_CREDENTIALS": ["Connect with {v}/app and run the migration.", "The DSN is {v} in production.", "Try {v} from the staging box."],
    "SECRET": ["Here is my key: {v}", "api_key={v}", "Why does {v} return 401?", "export OPENAI_API_KEY={v}", "token: {v}"],
    "ADDRESS": ["Ship it to {v}.", "I live at {v} and the parcel never came.", "Our office moved to {v}.", "Address: {v}"],
}

_VALUE: dict[str, Callable[[_Gen], str]] = {
    "EMAIL": _Gen.email, "PHONE": _Gen.phone, "CREDIT_CARD": _Gen.card, "IBAN": _Gen.iban,
    "US_SSN": lambda g: g.f.ssn(), "IP_ADDRESS": _Gen.ip, "MAC_ADDRESS": _Gen.mac, "DATE_OF_BIRTH": _Gen.dob,
    "URL_CREDENTIALS": _Gen.url_cred, "SECRET": _Gen.secret, "ADDRESS": _Gen.address,
}

_PII_FREE = [
    "How do I reverse a list in Python {ver} without copying it?",
    "Explain the difference between TCP and UDP in {n} bullet points.",
    "Why does my Docker build fail at step {n} with exit code {code}?",
    "Write a haiku about autumn leaves and {thing}.",
    "Summarize the plot of Hamlet in {n} sentences.",
    "What is the time complexity of quicksort on an already sorted array of {big} elements?",
    "Convert {n} kilometers to miles and round to {m} decimals.",
    "Our build {hash} broke the CI pipeline; what should I check first?",
    "Compare PostgreSQL {ver} and MySQL for a write-heavy workload.",
    "Refactor this function to use async/await: def fetch(url): return requests.get(url).json()",
    "Give me {n} ideas for a team offsite in the spring.",
    "What does HTTP status {code} mean and when should an API return it?",
    "Translate 'good morning, how are you?' into French and Spanish.",
    "Is it safe to upgrade Kubernetes from {ver} to the next minor release?",
    "The invoice total is ${price} plus {n}% tax; what is the final amount?",
    "Explain how Git rebase differs from merge, with an example.",
    "List the planets of the Solar System ordered by size.",
    "Why is the sky blue? Answer for a {n}-year-old.",
    "Write a SQL query that returns the top {n} customers by revenue in 2023.",
    "My laptop fan spins at {big} RPM under load; is that normal?",
    "Please review the docs at https://docs.python.org/3/library/re.html and explain possessive quantifiers.",
    "The request id {uuid} failed with a timeout after {n} seconds.",
    "Draft a polite reminder that the report is due on Friday.",
    "What are the main causes of the French Revolution?",
    "Suggest a name for a coffee shop that also sells books.",
    "Create a weekly meal plan with {n} vegetarian dinners.",
    "How many bytes are in {n} GiB, and how many in {n} GB?",
    "Run pip install numpy=={ver} and tell me why the wheel is not found.",
    "What is the capital of Australia and why is it not Sydney?",
    "Explain the CAP theorem with an example from Cassandra.",
    "In JavaScript, why does [] + {{}} evaluate to a string?",
    "Write unit tests for a function that parses ISO 8601 dates like 2024-03-15T10:30:00Z.",
    "Estimate the monthly cost of {n} GPUs at ${price} per hour.",
    "What does the error 'ModuleNotFoundError: No module named yaml' mean?",
    "The sensor logged {big} readings between 09:00 and 17:30 on 2024-05-02.",
    "Describe the water cycle in simple terms.",
    "How does the Linux OOM killer choose which process to kill?",
    "Benchmark results: p50 {n} ms, p95 {m} ms, throughput {big} req/s. Are these good?",
    "Write a cover letter opening line for a data analyst role.",
    "Why does NumPy broadcasting fail for shapes ({n}, 3) and ({m}, 4)?",
    # Proper nouns that are not people: places, companies, products, events.
    "Plan a {n}-day trip to San Francisco and Lake Tahoe in October.",
    "What is the population of Los Angeles compared to San Diego?",
    "Compare Microsoft Azure and Google Cloud for hosting a Django app.",
    "Summarize the history of the Ottoman Empire in {n} paragraphs.",
    "How does Goldman Sachs make money from market making?",
    "Is the Golden Gate Bridge longer than the Brooklyn Bridge?",
    "Recommend {n} museums in New York City for a rainy Sunday.",
    "What did the Treaty of Versailles change for Germany?",
]


def _pii_free(g: _Gen) -> str:
    t = g.pick(_PII_FREE)
    r = g.r
    return t.format(
        ver=f"{r.randint(1, 18)}.{r.randint(0, 30)}" + g.pick(["", f".{r.randint(0, 20)}"]),
        n=r.randint(2, 12), m=r.randint(1, 9), code=g.pick([400, 401, 403, 404, 409, 418, 500, 502, 137, 1]),
        thing=g.pick(["coffee", "trains", "the sea", "old libraries"]), big=r.randint(1000, 999999),
        hash=f"{r.getrandbits(160):040x}", price=f"{r.randint(1, 999)}.{r.randint(0, 99):02d}",
        uuid=str(g.f.uuid4()),
    )


def _pii_case(g: _Gen) -> Case:
    n_texts = g.pick([1, 1, 1, 2, 3])
    texts: list[str] = []
    labels: list[list[Label]] = []
    person: tuple[str, str, str] | None = None
    for ti in range(n_texts):
        b = _Builder()
        for _ in range(g.r.randint(1, 3)):
            ent = g.pick(list(_TEMPLATES))
            template = g.pick(_TEMPLATES[ent])
            if ent == "PERSON":
                person = g.person()
                b.fill(template, v=(person[2], "PERSON"))
            else:
                b.fill(template, v=(_VALUE[ent](g), ent))
            b.add(" ")
            if g.r.random() < 0.3:
                b.add(g.pick(_FILLER) + " ")
        if person is not None and ti > 0 and g.r.random() < 0.7:
            # A later message mentions the surname alone: conversation-wide propagation.
            b.fill(g.pick(["What should I tell {s} about it?", "Did {s} reply yet?", "Ask {s} to confirm."]),
                   s=(person[1], "PERSON"))
        texts.append(b.text().rstrip())
        labels.append([lb for lb in b.labels if lb[1] <= len(texts[-1])])
    return Case(texts, labels)


def generate(cases: int = 10_000, pii_free: int = 1_000, seed: int = 1234) -> list[Case]:
    g = _Gen(seed)
    out = [_pii_case(g) for _ in range(cases)]
    out += [Case([_pii_free(g)], [[]], pii_free=True) for _ in range(pii_free)]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--pii-free", type=int, default=1_000)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", default="-", help="JSONL file ('-' = stdout)")
    a = ap.parse_args()
    sink = sys.stdout if a.out == "-" else open(a.out, "w", encoding="utf-8")
    counts: dict[str, int] = {}
    with sink:
        for c in generate(a.cases, a.pii_free, a.seed):
            sink.write(json.dumps({"texts": c.texts, "labels": c.labels, "pii_free": c.pii_free}) + "\n")
            for lbs in c.labels:
                for *_, ent in lbs:
                    counts[ent] = counts.get(ent, 0) + 1
    print(f"{'entity':16s} {'labels':>7s}", file=sys.stderr)
    for ent, n in sorted(counts.items()):
        print(f"{ent:16s} {n:7d}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
