"""app/shellsafe.py: the whitelist validators and the quoting that guards every SSH command.

The quoting tests run a real /bin/sh: a value is safe only if the shell prints it back
byte for byte and nothing it contains gets executed.
"""

from __future__ import annotations

import shlex
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import InvalidInput
from app.shellsafe import (
    join_command,
    quote_arg,
    quote_args,
    quote_path,
    validate_cli_flag,
    validate_container_name,
    validate_env_name,
    validate_env_value,
    validate_extra_arg,
    validate_hf_repo,
    validate_hf_revision,
    validate_hostname,
    validate_image,
    validate_interface_name,
    validate_model_name,
    validate_path,
    validate_port,
    validate_service_name,
)

SHA = "0123456789abcdef" * 4
# Lone surrogates are excluded like st.text() does by default: quote_arg refuses them on purpose.
NO_NUL_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"))

# ---------------------------------------------------------------- quoting


@given(NO_NUL_TEXT)
def test_quote_arg_round_trips_through_shlex_split(value):
    assert shlex.split(quote_arg(value)) == [value]


@given(st.lists(NO_NUL_TEXT, max_size=8))
def test_quote_args_round_trips_through_shlex_split(values):
    assert shlex.split(quote_args(values)) == values
    assert join_command(values) == quote_args(values)


def test_quote_arg_accepts_ints_and_refuses_other_types():
    assert quote_arg(8000) == "8000"
    assert quote_args(["vllm", "serve", "--port", 8000]) == "vllm serve --port 8000"
    for bad in (None, True, 1.5, ["a"], b"bytes", {"a": 1}):
        with pytest.raises(InvalidInput):
            quote_arg(bad)


def test_quote_arg_refuses_nul_and_lone_surrogates():
    with pytest.raises(InvalidInput, match="U\\+0000"):
        quote_arg("a\0b")
    with pytest.raises(InvalidInput, match="U\\+D800"):
        quote_arg("a\ud800")


def test_quote_args_refuses_a_bare_string():
    # quote_args("rm -rf") would otherwise quote every character separately.
    with pytest.raises(TypeError):
        quote_args("rm -rf /")


HOSTILE_VALUES = [
    "; touch canary",
    "$(touch canary)",
    "`touch canary`",
    "a\ntouch canary",
    "a\rtouch canary",
    "' ; touch canary ; '",
    '" ; touch canary ; "',
    "'\"'\"'; touch canary",
    "&& touch canary",
    "| touch canary",
    "|| touch canary &",
    "> canary",
    "< /etc/passwd",
    "*",
    "?",
    "[a-z]*",
    "~",
    "~root",
    "$HOME",
    "${HOME}",
    "$((1+1))",
    "!!",
    "\\",
    "\\'",
    "-n",
    "--help",
    "",
    " ",
    "\t",
    "a\\nb",
    "%s%s%n",
    "ünïcødé ；fullwidth；",
    "emoji \U0001F680 and RTL \u202e override",
    "#comment",
    "{a,b}",
    "a=b",
]


def run_printf(tmp_path, argument: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["/bin/sh", "-c", "printf '%s\\n' " + argument],
        cwd=tmp_path,
        capture_output=True,
        timeout=10,
    )


def assert_shell_prints_literally(tmp_path, value: str) -> None:
    (tmp_path / "decoy-file").write_text("")  # something for an unquoted glob to expand to
    result = run_printf(tmp_path, quote_arg(value))
    assert result.returncode == 0, result.stderr
    assert result.stdout == value.encode() + b"\n"
    assert not (tmp_path / "canary").exists()


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_real_shell_prints_hostile_value_literally(tmp_path, value):
    assert_shell_prints_literally(tmp_path, value)


def test_the_shell_test_can_fail(tmp_path):
    # Unquoted, the same machinery does run the payload: the check above is not vacuous.
    run_printf(tmp_path, "x; touch canary")
    assert (tmp_path / "canary").exists()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(NO_NUL_TEXT)
def test_real_shell_prints_any_text_literally(tmp_path, value):
    assert_shell_prints_literally(tmp_path, value)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(NO_NUL_TEXT, min_size=1, max_size=5))
def test_real_shell_receives_each_argument_separately(tmp_path, values):
    result = subprocess.run(
        ["/bin/sh", "-c", "printf '<%s>' " + quote_args(values)],
        cwd=tmp_path, capture_output=True, timeout=10,
    )
    assert result.stdout == "".join(f"<{v}>" for v in values).encode()


def test_quote_path_expands_home_on_the_node_and_nothing_else(tmp_path):
    quoted = quote_path("~/.cache/huggingface")
    result = subprocess.run(["/bin/sh", "-c", "printf '%s' " + quoted], capture_output=True,
                            env={"HOME": "/home/spark user"}, timeout=10)
    assert result.stdout == b"/home/spark user/.cache/huggingface"
    assert quote_path("~") == '"$HOME"'
    assert quote_path("/data/models") == "/data/models"
    with pytest.raises(InvalidInput):
        quote_path("~/$(touch canary)")


# ---------------------------------------------------------------- validators

GOOD = {
    validate_model_name: ["gpt-oss-120b", "qwen3:235b", "Llama-3.3-70B-Instruct-FP4", "m", "a" * 128,
                          "Qwen3-235B-A22B-Instruct-2507-FP8", "embed_v1.5"],
    validate_hf_repo: ["openai/gpt-oss-120b", "Qwen/Qwen3-235B-A22B-Instruct-2507-FP8",
                       "nvidia/Llama-3.3-70B-Instruct-FP4", "BAAI/bge-m3", "Systran/faster-whisper-tiny.en",
                       "meta-llama/Llama-3.1-8B-Instruct", "a/b", ("o" * 96) + "/" + ("n" * 96)],
    validate_hf_revision: ["main", "v1.0", "refs/pr/3", "a" * 40, "release_2025-10"],
    validate_service_name: ["spark-embed", "whisper", "nim.llama_3"],
    validate_container_name: ["vllm-gpt-oss-120b", "ab", "nim_llama.3", "f" * 64, "x" * 128],
    validate_image: ["nvcr.io/nvidia/vllm:25.09-py3", f"ghcr.io/x/y@sha256:{SHA}",
                     f"nvcr.io/nvidia/vllm:25.09-py3@sha256:{SHA}", "ubuntu", "ubuntu:24.04",
                     "localhost:5000/spark/embed:latest", "nvcr.io/nim/meta/llama-3.1-8b-instruct-dgx-spark:latest",
                     "registry.example.com:443/a/b/c__d", "[::1]:5000/img:tag", "vllm-node"],
    validate_env_name: ["HF_TOKEN", "NCCL_SOCKET_IFNAME", "_X", "a1"],
    validate_env_value: ["enp1s0f1np1", "", "0", "a b;c$(d)`e`|&'\"", "mlx5_0,mlx5_1", "ünïcødé", "tab\there"],
    validate_cli_flag: ["--max-model-len", "--kv-cache-dtype", "--tensor-parallel-size", "--enable-prefix-caching"],
    validate_extra_arg: ["--max-num-seqs", "256", '{"max_tokens": 5}', "a;b", "$(not executed)", "x" * 4096],
    validate_path: ["/data/models", "~/.cache/huggingface", "~", "~/", "/", "/a/b-c_d@e+f.g/", "/a/.hidden"],
    validate_hostname: ["spark-1", "spark-1.local", "192.168.1.20", "10.0.0.1", "::1", "fe80::1%enp1s0f1np1",
                        "2001:db8::42", "spark.example.com.", "a" * 63 + ".com", "localhost"],
    validate_interface_name: ["enp1s0f1np1", "eth0", "lo", "br-1234567890ab", "bond0.100", "a" * 15],
}

BAD_EVERYWHERE = [
    "",
    ";",
    "a;b",
    "$(touch canary)",
    "`id`",
    "a\nb",
    "a\0b",
    "a b",
    "a；b",  # fullwidth semicolon
    "ａｂｃ",  # fullwidth letters
    "а",  # Cyrillic a
    "x" * 5000,
    None,
    ["a"],
    123.0,
]

BAD = {
    validate_model_name: ["openai/gpt-oss-120b", "-rf", ".hidden", "a" * 129, "a|b", "a&&b", "../x"],
    validate_hf_repo: ["gpt2", "a/b/c", "/a", "a/", "-a/b", "a/b-", "a./b", "a/.b", "a..b/c", "a--b/c",
                       "../etc", "a/..", ("o" * 97) + "/n", "a/b c", "a/*"],
    validate_hf_revision: ["../main", "a..b", "-x", "a//b", "main/", "main.", "a b", "a" * 129, "/main"],
    validate_service_name: ["-x", ".x", "a/b", "a" * 65, "a:b"],
    validate_container_name: ["a", "-x", "_x", ".x", "a/b", "a:b", "x" * 129],
    validate_image: ["Nvcr.io/NVIDIA/vllm", "ubuntu:", "ubuntu:-x", "-ubuntu", "a//b", "a/b:c:d",
                     "ghcr.io/x/y@sha256:abc", f"ghcr.io/x/y@sha256:{SHA.upper()}", "a b", "a;b",
                     "nvcr.io/nvidia/vllm:25.09-py3;id", "UPPER", "a/../b"],
    validate_env_name: ["1X", "A-B", "A B", "A=B", "é"],
    validate_env_value: ["a\nb", "a\rb", "a\0b", "\x1b[31m", "\x7f", "a\ud800", "x" * 32769],
    validate_cli_flag: ["-x", "--", "--Max", "---x", "--x y", "--x=1", "x", "--x;y"],
    validate_extra_arg: ["", "a\nb", "a\rb", "a\0b", "\x1b", "x" * 4097],
    validate_path: ["relative/path", "../etc", "/a/../b", "/a/..", "~/../x", "~root", "/a~b", "/a b",
                    "/a;b", "/$(x)", "-rf", "/a\nb", "/" + "a" * 4096, ".."],
    validate_hostname: ["-oProxyCommand=x", "spark_1", "a..b", ".a", "a-", "999.1.1.1", "1.2.3",
                        "fe80::1%;x", "fe80::1%eth 0", "fe80::1%-oX", "fe80::1%", "fe80::1%a123456789abcdef", ":::1", "a" * 64 + ".com", "a b", "[::1]",
                        ("a" * 60 + ".") * 5],
    validate_interface_name: ["-x", ".", "..", "a" * 16, "eth 0", "eth/0", "eth0;x"],
}

# Plain-text validators that must accept shell metacharacters (they are quoted at the sink).
TEXT_VALIDATORS = {validate_env_value, validate_extra_arg}

FIELD_NAMES = {
    validate_model_name: "model name",
    validate_hf_repo: "Hugging Face repo",
    validate_hf_revision: "revision",
    validate_service_name: "service name",
    validate_container_name: "container name",
    validate_image: "image",
    validate_env_name: "environment variable name",
    validate_env_value: "environment variable value",
    validate_cli_flag: "flag",
    validate_extra_arg: "extra argument",
    validate_path: "path",
    validate_hostname: "host",
    validate_interface_name: "network interface",
}


def cases(table):
    return [pytest.param(func, value, id=f"{func.__name__}-{value!r:.40}") for func, values in table.items()
            for value in values]


def bad_everywhere_cases():
    out = []
    for func in GOOD:
        for value in BAD_EVERYWHERE:
            # The free-text validators take metacharacters as literal text (quoted at
            # the sink); for them only wrong types and control characters are hostile.
            if func in TEXT_VALIDATORS and isinstance(value, str) and "\n" not in value and "\0" not in value:
                continue
            out.append(pytest.param(func, value, id=f"{func.__name__}-{value!r:.40}"))
    return out


@pytest.mark.parametrize(("func", "value"), cases(GOOD))
def test_validator_accepts_realistic_value(func, value):
    assert func(value) == value


@pytest.mark.parametrize(("func", "value"), cases(BAD) + bad_everywhere_cases())
def test_validator_rejects_hostile_value_and_names_the_field(func, value):
    with pytest.raises(InvalidInput) as info:
        func(value)
    error = info.value
    field = FIELD_NAMES[func]
    assert error.field == field
    assert field in str(error)
    assert error.status == 400
    assert "Allowed:" in str(error)
    assert len(str(error)) < 600  # the offending value is shown truncated


def test_error_shows_the_offending_value_truncated():
    with pytest.raises(InvalidInput) as info:
        validate_model_name("evil;" + "x" * 500)
    message = str(info.value)
    assert "'evil;xxx" in message and "..." in message
    assert "x" * 100 not in message


def test_error_names_the_offending_character():
    with pytest.raises(InvalidInput, match=r"U\+FF1B"):
        validate_model_name("qwen；rm")
    with pytest.raises(InvalidInput, match=r"character ';' \(U\+003B\)"):
        validate_model_name("qwen;rm")


def test_field_can_be_renamed_by_the_caller():
    with pytest.raises(InvalidInput) as info:
        validate_model_name("a;b", field="served_model_name")
    assert info.value.field == "served_model_name"
    assert "served_model_name" in str(info.value)


@pytest.mark.parametrize(("value", "expected"), [(8000, 8000), ("8000", 8000), (1, 1), ("65535", 65535),
                                                 ("08000", 8000)])
def test_validate_port_accepts_ints_and_decimal_strings(value, expected):
    assert validate_port(value) == expected


@pytest.mark.parametrize("value", [0, 65536, -1, True, False, None, "", " 80", "80 ", "8_000", "0x50",
                                   "٨٠", "80;id", 80.0, "1e3", [80]])
def test_validate_port_rejects(value):
    with pytest.raises(InvalidInput) as info:
        validate_port(value)
    assert info.value.field == "port"
    assert "port" in str(info.value)


@given(st.text(max_size=60))
def test_validated_names_are_always_shell_inert(value):
    # Whatever a name validator lets through needs no quoting at all: defence in depth.
    for func in (validate_model_name, validate_container_name, validate_service_name, validate_env_name,
                 validate_interface_name, validate_hf_repo, validate_cli_flag):
        try:
            accepted = func(value)
        except InvalidInput:
            continue
        assert shlex.quote(accepted) == accepted, (func.__name__, accepted)
        assert not accepted.startswith("-") or func is validate_cli_flag
