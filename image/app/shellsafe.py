"""The only way a user-supplied value reaches a shell command on a node.

Contract, in two steps ("whitelist at the API boundary, shlex.quote at the sink"):

1. At the API boundary every user value goes through one `validate_*` function. Each
   checks the value against a whitelist (characters, shape, length) and returns it
   unchanged, or raises `InvalidInput` (HTTP 400) whose message names the field, shows
   the offending value and says what is allowed. Non-string input (None, lists, numbers
   where text is expected) is rejected the same way.
2. Where a command string is built, every value - validated or not - is passed through
   `quote_arg` / `quote_args` (shlex.quote). Never interpolate a raw value into an
   f-string command.

Both steps are needed: quoting alone stops shell injection but not option injection
(`--rm`, `-v /:/host`) or nonsense names; validation alone is one regex bug away from
`$(...)`. `shlex.split(quote_args(argv)) == argv` always holds; validate.py (the vLLM
pre-flight) relies on that round trip, so do not change the quoting style.

`~` is not expanded inside quotes, so a `~/...` path must go through `quote_path`, which
turns the leading `~` into `"$HOME"` for the node's shell to expand.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import unicodedata
from collections.abc import Iterable

from app.errors import InvalidInput

_SHOWN_VALUE_LIMIT = 80


def _shown(value: object) -> str:
    """repr() of the offending value, cut short so a 10 kB payload does not flood the error."""
    text = repr(value)
    if len(text) > _SHOWN_VALUE_LIMIT:
        text = text[: _SHOWN_VALUE_LIMIT - 3] + "..."
    return text


def _invalid(field: str, value: object, reason: str, allowed: str) -> InvalidInput:
    return InvalidInput(f"Invalid {field} {_shown(value)}: {reason}. Allowed: {allowed}.", field=field)


def _describe_char(char: str) -> str:
    return f"character {char!r} (U+{ord(char):04X})"


def _require_str(value: object, field: str, allowed: str) -> str:
    # bool is not str, but say so explicitly: JSON `true` must never become a name.
    if not isinstance(value, str):
        raise _invalid(field, value, f"expected text, got {type(value).__name__}", allowed)
    return value


def _check_length(text: str, field: str, allowed: str, max_len: int) -> None:
    if not text:
        raise _invalid(field, text, "it is empty", allowed)
    if len(text) > max_len:
        raise _invalid(field, text, f"it is {len(text)} characters long, the limit is {max_len}", allowed)


def _check_charset(text: str, field: str, allowed: str, charset: re.Pattern[str]) -> None:
    # Name the first bad character: "fullwidth semicolon" is invisible in most fonts.
    for char in text:
        if not charset.fullmatch(char):
            raise _invalid(field, text, f"{_describe_char(char)} is not allowed", allowed)


def _check_no_control_chars(text: str, field: str, allowed: str) -> None:
    """Reject NUL, newline, CR, ESC, DEL, C1 controls and lone surrogates; tab is fine.

    Newlines would end a command line; NUL truncates C strings; surrogates cannot be
    encoded as UTF-8 on the way to the node.
    """
    for char in text:
        category = unicodedata.category(char)
        if (category == "Cc" and char != "\t") or category == "Cs":
            raise _invalid(field, text, f"{_describe_char(char)} is a control character", allowed)


def _validate_pattern(value: object, field: str, *, pattern: re.Pattern[str], charset: re.Pattern[str],
                      max_len: int, allowed: str) -> str:
    """Shared path of the regex validators: type, length, characters, then shape."""
    text = _require_str(value, field, allowed)
    _check_length(text, field, allowed, max_len)
    _check_charset(text, field, allowed, charset)
    if not pattern.fullmatch(text):
        raise _invalid(field, text, "it does not have the required form", allowed)
    return text


# Character classes are spelled out in ASCII: \w and \d would also match non-ASCII
# letters and digits.
_MODEL_CHARS = re.compile(r"[A-Za-z0-9._:-]")
_MODEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_MODEL_ALLOWED = "1-128 of A-Z a-z 0-9 . _ : -, starting with a letter or digit (no slashes)"


def validate_model_name(value: object, *, field: str = "model name") -> str:
    """A catalog key or served model name, e.g. `gpt-oss-120b` or `qwen3:235b`."""
    return _validate_pattern(value, field, pattern=_MODEL_RE, charset=_MODEL_CHARS, max_len=128,
                             allowed=_MODEL_ALLOWED)


_HF_CHARS = re.compile(r"[A-Za-z0-9._/-]")
_HF_PART_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_HF_ALLOWED = ("'owner/name', each part 1-96 of A-Z a-z 0-9 . _ -, not starting or ending "
               "with - or ., no '..' or '--'")


def validate_hf_repo(value: object, *, field: str = "Hugging Face repo") -> str:
    """A Hugging Face repo id `owner/name`, e.g. `openai/gpt-oss-120b`."""
    text = _require_str(value, field, _HF_ALLOWED)
    _check_length(text, field, _HF_ALLOWED, 96 * 2 + 1)
    _check_charset(text, field, _HF_ALLOWED, _HF_CHARS)
    parts = text.split("/")
    if len(parts) != 2:
        raise _invalid(field, text, "it must contain exactly one '/'", _HF_ALLOWED)
    for part in parts:
        if not _HF_PART_RE.fullmatch(part) or part.endswith(("-", ".")):
            raise _invalid(field, text, f"{part!r} is not a valid owner or name", _HF_ALLOWED)
    # Hugging Face forbids these; `--` is also the separator in the cache dir names.
    if ".." in text or "--" in text:
        raise _invalid(field, text, "'..' and '--' are not allowed", _HF_ALLOWED)
    return text


_REVISION_CHARS = re.compile(r"[A-Za-z0-9._/-]")
_REVISION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")
_REVISION_ALLOWED = ("1-128 of A-Z a-z 0-9 . _ / -, starting with a letter or digit, "
                     "no '..' or '//', not ending with / or .")


def validate_hf_revision(value: object, *, field: str = "revision") -> str:
    """A branch, tag or commit hash, e.g. `main`, `v1.0`, `refs/pr/3`."""
    text = _validate_pattern(value, field, pattern=_REVISION_RE, charset=_REVISION_CHARS, max_len=128,
                             allowed=_REVISION_ALLOWED)
    # git ref rules: these can never name a ref, and `..` is a path escape.
    if ".." in text or "//" in text or text.endswith(("/", ".")):
        raise _invalid(field, text, "'..', '//' and a trailing / or . are not allowed", _REVISION_ALLOWED)
    return text


_INCLUDE_CHARS = re.compile(r"[A-Za-z0-9._/*?\[\]-]")
_INCLUDE_ALLOWED = ("a file glob like '*.safetensors' or 'original/*': 1-256 of A-Z a-z 0-9 . _ / - * ? [ ], "
                    "not starting with - or /, no '..' components")


def validate_hf_include(value: object, *, field: str = "include pattern") -> str:
    """A glob for `hf download --include`, e.g. `*.safetensors`, `config.json`, `original/*`.

    The glob characters are harmless here because the pattern is quoted at the sink: it
    reaches `hf` as one literal argument and `hf` matches it against the repo's file list.
    """
    text = _require_str(value, field, _INCLUDE_ALLOWED)
    _check_length(text, field, _INCLUDE_ALLOWED, 256)
    _check_charset(text, field, _INCLUDE_ALLOWED, _INCLUDE_CHARS)
    if text.startswith(("-", "/")):
        raise _invalid(field, text, "it must not start with - or /", _INCLUDE_ALLOWED)
    if ".." in text.split("/"):
        raise _invalid(field, text, "'..' components are not allowed", _INCLUDE_ALLOWED)
    return text


_NAME_CHARS = re.compile(r"[A-Za-z0-9_.-]")
_SERVICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SERVICE_ALLOWED = "1-64 of A-Z a-z 0-9 _ . -, starting with a letter or digit"


def validate_service_name(value: object, *, field: str = "service name") -> str:
    """A key of services.yaml; also used as a container name, so docker's alphabet."""
    return _validate_pattern(value, field, pattern=_SERVICE_RE, charset=_NAME_CHARS, max_len=64,
                             allowed=_SERVICE_ALLOWED)


# Docker's own rule is [a-zA-Z0-9][a-zA-Z0-9_.-]+ (so at least 2 characters).
_CONTAINER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{1,127}")
_CONTAINER_ALLOWED = "2-128 of A-Z a-z 0-9 _ . -, starting with a letter or digit (docker's rule)"


def validate_container_name(value: object, *, field: str = "container name") -> str:
    """A docker container name or id."""
    return _validate_pattern(value, field, pattern=_CONTAINER_RE, charset=_NAME_CHARS, max_len=128,
                             allowed=_CONTAINER_ALLOWED)


_PORT_ALLOWED = "an integer from 1 to 65535"


def validate_port(value: object, *, field: str = "port") -> int:
    """A TCP port as int or decimal string; returns the int."""
    # bool is an int subclass: `true` would otherwise become port 1.
    if isinstance(value, bool):
        raise _invalid(field, value, "expected a number, got bool", _PORT_ALLOWED)
    if isinstance(value, str):
        # Not int(): it accepts " 80", "8_000" and non-ASCII digits.
        if not re.fullmatch(r"[0-9]{1,5}", value):
            raise _invalid(field, value, "it is not a decimal number", _PORT_ALLOWED)
        value = int(value)
    if not isinstance(value, int):
        raise _invalid(field, value, f"expected a number, got {type(value).__name__}", _PORT_ALLOWED)
    if not 1 <= value <= 65535:
        raise _invalid(field, value, "it is out of range", _PORT_ALLOWED)
    return value


_PATH_CHARS = re.compile(r"[A-Za-z0-9._/@+~-]")
_PATH_ALLOWED = ("an absolute path or one starting with ~/, of A-Z a-z 0-9 . _ / @ + - "
                 "(~ only at the start), no '..' components, at most 4096 characters")


def validate_path(value: object, *, field: str = "path") -> str:
    """An absolute or home-relative POSIX path on a node, e.g. `/data/models`, `~/.cache/huggingface`."""
    text = _require_str(value, field, _PATH_ALLOWED)
    _check_length(text, field, _PATH_ALLOWED, 4096)
    _check_charset(text, field, _PATH_ALLOWED, _PATH_CHARS)
    # Requiring / or ~ first also keeps a path from ever looking like an option (-rf).
    if not (text.startswith("/") or text == "~" or text.startswith("~/")):
        raise _invalid(field, text, "it must start with / or ~/", _PATH_ALLOWED)
    if "~" in text[1:]:
        raise _invalid(field, text, "'~' is only allowed as the first character", _PATH_ALLOWED)
    if ".." in text.split("/"):
        raise _invalid(field, text, "'..' components are not allowed", _PATH_ALLOWED)
    return text


# Docker's reference grammar (distribution/reference), ASCII only.
_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_IMAGE_RE = re.compile(
    rf"(?P<name>{_IMAGE_NAME})(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?(?:@(?:sha256:[0-9a-f]{{64}}|sha512:[0-9a-f]{{128}}))?"
)
_IMAGE_CHARS = re.compile(r"[A-Za-z0-9._/:@\[\]-]")
_IMAGE_ALLOWED = ("a docker image reference registry[:port]/path[:tag][@sha256:<64 hex>], "
                  "path components lowercase, e.g. nvcr.io/nvidia/vllm:25.09-py3")


def validate_image(value: object, *, field: str = "image") -> str:
    """A docker image reference, e.g. `nvcr.io/nvidia/vllm:25.09-py3` or `ghcr.io/x/y@sha256:...`."""
    text = _validate_pattern(value, field, pattern=_IMAGE_RE, charset=_IMAGE_CHARS, max_len=512,
                             allowed=_IMAGE_ALLOWED)
    name = _IMAGE_RE.fullmatch(text).group("name")
    if len(name) > 255:
        raise _invalid(field, text, "the repository name is longer than 255 characters", _IMAGE_ALLOWED)
    return text


_ENV_NAME_CHARS = re.compile(r"[A-Za-z0-9_]")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_NAME_ALLOWED = "1-256 of A-Z a-z 0-9 _, not starting with a digit"


def validate_env_name(value: object, *, field: str = "environment variable name") -> str:
    """An environment variable name, e.g. `NCCL_SOCKET_IFNAME`."""
    return _validate_pattern(value, field, pattern=_ENV_NAME_RE, charset=_ENV_NAME_CHARS, max_len=256,
                             allowed=_ENV_NAME_ALLOWED)


_ENV_VALUE_ALLOWED = "any text without control characters (no NUL, newline, CR), at most 32768 characters"


def validate_env_value(value: object, *, field: str = "environment variable value") -> str:
    """An environment variable value. Shell metacharacters are fine: it is quoted at the sink."""
    text = _require_str(value, field, _ENV_VALUE_ALLOWED)
    # Empty is a legitimate value (`FOO=`), so only the upper bound.
    if len(text) > 32768:
        raise _invalid(field, text, f"it is {len(text)} characters long, the limit is 32768", _ENV_VALUE_ALLOWED)
    _check_no_control_chars(text, field, _ENV_VALUE_ALLOWED)
    return text


_FLAG_CHARS = re.compile(r"[a-z0-9-]")
_FLAG_RE = re.compile(r"--[a-z0-9][a-z0-9-]*")
_FLAG_ALLOWED = "a long option like --max-model-len: '--' then lowercase letters, digits and -, at most 128"


def validate_cli_flag(value: object, *, field: str = "flag") -> str:
    """A long command-line option name, e.g. `--kv-cache-dtype`."""
    return _validate_pattern(value, field, pattern=_FLAG_RE, charset=_FLAG_CHARS, max_len=128,
                             allowed=_FLAG_ALLOWED)


_EXTRA_ARG_ALLOWED = ("one argument of any text without control characters (no NUL, newline, CR), "
                      "1-4096 characters; it is passed literally, never interpreted by a shell")


def validate_extra_arg(value: object, *, field: str = "extra argument") -> str:
    """One extra argument for `vllm serve`, e.g. `{"max_tokens": 5}`. Quoted at the sink."""
    text = _require_str(value, field, _EXTRA_ARG_ALLOWED)
    _check_length(text, field, _EXTRA_ARG_ALLOWED, 4096)
    _check_no_control_chars(text, field, _EXTRA_ARG_ALLOWED)
    return text


_HOST_CHARS = re.compile(r"[A-Za-z0-9.:%_-]")
_DNS_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_HOST_ALLOWED = "a DNS name (labels of A-Z a-z 0-9 -, at most 253 characters) or an IPv4/IPv6 address"


def validate_hostname(value: object, *, field: str = "host") -> str:
    """A node address: DNS name, IPv4 or IPv6 literal (optionally with a %scope interface)."""
    text = _require_str(value, field, _HOST_ALLOWED)
    _check_length(text, field, _HOST_ALLOWED, 254)
    _check_charset(text, field, _HOST_ALLOWED, _HOST_CHARS)
    if ":" in text:
        address, _, scope = text.partition("%")
        # ipaddress accepts any scope text ("fe80::1%;rm"), so check it ourselves.
        if "%" in text:
            validate_interface_name(scope, field=field)
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise _invalid(field, text, "it is not a valid IPv6 address", _HOST_ALLOWED) from None
        return text
    if re.fullmatch(r"[0-9.]+", text):
        # All digits and dots: an IPv4 address or nothing (no DNS name looks like 999.1.1.1).
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            raise _invalid(field, text, "it is not a valid IPv4 address", _HOST_ALLOWED) from None
        return text
    labels = text[:-1].split(".") if text.endswith(".") else text.split(".")
    if len(text.rstrip(".")) > 253 or not all(_DNS_LABEL_RE.fullmatch(label) for label in labels):
        raise _invalid(field, text, "it is not a valid DNS name", _HOST_ALLOWED)
    return text


_IFNAME_CHARS = re.compile(r"[A-Za-z0-9_.:-]")
_IFNAME_RE = re.compile(r"[A-Za-z0-9_.:][A-Za-z0-9_.:-]{0,14}")
_IFNAME_ALLOWED = "1-15 of A-Z a-z 0-9 _ . : -, not starting with -, not '.' or '..'"


def validate_interface_name(value: object, *, field: str = "network interface") -> str:
    """A Linux network interface name, e.g. `enp1s0f1np1`."""
    text = _validate_pattern(value, field, pattern=_IFNAME_RE, charset=_IFNAME_CHARS, max_len=15,
                             allowed=_IFNAME_ALLOWED)
    if text in (".", ".."):
        raise _invalid(field, text, "'.' and '..' are not interface names", _IFNAME_ALLOWED)
    return text


def quote_arg(value: str | int) -> str:
    """shlex.quote one argument. Only str and int: anything else is a bug upstream."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidInput(f"Cannot pass {_shown(value)} ({type(value).__name__}) to a shell command: "
                           "only text and integers are allowed")
    text = str(value)
    # A NUL cannot be represented in an argv string; a lone surrogate cannot be sent as UTF-8.
    for char in text:
        if char == "\0" or unicodedata.category(char) == "Cs":
            raise InvalidInput(f"Cannot pass {_shown(text)} to a shell command: "
                               f"{_describe_char(char)} is not allowed")
    return shlex.quote(text)


def quote_args(values: Iterable[str | int]) -> str:
    """Quote every argument and join them with spaces: a command line for `sh -c`."""
    # A bare string is iterable too, and would be quoted one character at a time.
    if isinstance(values, (str, bytes)):
        raise TypeError("quote_args takes a list of arguments, not a single string; use quote_arg")
    return " ".join(quote_arg(value) for value in values)


join_command = quote_args


def quote_path(value: object, *, field: str = "path") -> str:
    """Validate a node path and quote it so a leading `~` still expands to the node's $HOME."""
    text = validate_path(value, field=field)
    if text == "~":
        return '"$HOME"'
    if text.startswith("~/"):
        return '"$HOME"/' + quote_arg(text[2:])
    return quote_arg(text)
