"""The services catalog (services.yaml + SERVICES_OVERRIDES) and the commands built from it."""

from __future__ import annotations

import shlex
from types import SimpleNamespace

import pytest

from app import nim
from app import service_containers as sc
from app.errors import ConfigError, NotFound, ServiceUnavailable
from app.services_catalog import BUNDLED_SERVICES_YAML, load_services_catalog


def load(tmp_path, text: str | None = None):
    path = None
    if text is not None:
        path = tmp_path / "services-overrides.yaml"
        path.write_text(text)
    return load_services_catalog(SimpleNamespace(services_overrides=path))


def refusal(tmp_path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value.message


def test_the_bundled_catalog_has_the_embedder_the_audio_services_and_a_nim(tmp_path):
    catalog = load(tmp_path)
    kinds = {e.name: e.kind for e in catalog}
    assert kinds == {"spark-embed": "embeddings", "whisper": "transcription", "diarizer": "diarization",
                     "llama-3.1-8b-nim": "nim"}
    embed = catalog.get("spark-embed")
    assert (embed.image, embed.port, embed.node, embed.expected_dimension) == (
        "spark-control/spark-embed:latest", 8001, "spark1", 384)
    assert catalog.get("whisper").port_env == ["PORT", "UVICORN_PORT"]
    assert catalog.get("llama-3.1-8b-nim").health == "/v1/health/ready"
    assert catalog.get("diarizer").health == "/health"
    assert catalog.sources == (f"bundled services catalog {BUNDLED_SERVICES_YAML}",)


def test_overrides_add_merge_replace_and_remove(tmp_path):
    catalog = load(tmp_path, """
services:
  whisper: {node: spark2, env: {WHISPER__TTL: "-1"}}
  diarizer: null
  spark-embed: {replace: true, image: localhost:5000/spark/embed:v2, port: 9001, kind: embeddings}
  my-tool: {image: ghcr.io/me/tool:1.0, port: 7000, args: [serve, --fast]}
""")
    assert catalog.names() == ["spark-embed", "whisper", "llama-3.1-8b-nim", "my-tool"]
    whisper = catalog.get("whisper")
    assert whisper.node == "spark2"
    assert whisper.env == {"UVICORN_HOST": "0.0.0.0", "WHISPER__TTL": "-1"}  # mappings merge
    embed = catalog.get("spark-embed")
    assert (embed.port, embed.volumes, embed.expected_dimension) == (9001, [], None)  # replaced whole
    assert catalog.get("my-tool").kind == "other"
    with pytest.raises(NotFound, match="unknown service 'diarizer'"):
        catalog.get("diarizer")


@pytest.mark.parametrize("text, words", [
    ("services: {whisper: {imgae: x}}", "service 'whisper', field imgae: unknown key 'imgae' (did you mean 'image'?)"),
    ("services: {x1: {image: 'bad image!', port: 80}}", "service 'x1', field image:"),
    ("services: {x1: {image: a/b:1, port: 70000}}", "service 'x1', field port:"),
    ("services: {x1: {image: a/b:1, port: 80, env: {NGC_API_KEY: k}}}", "field env: env.NGC_API_KEY: secrets"),
    ("services: {x1: {image: a/b:1, port: 80, env: {PORT: '1'}}}", "PORT is written by spark-control"),
    ("services: {x1: {image: a/b:1, port: 80, volumes: ['/a']}}", "field volumes: volumes[0] '/a' must be"),
    ("services: {x1: {image: a/b:1, port: 80, volumes: ['../etc:/x']}}", "field volumes"),
    ("services: {x1: {image: a/b:1, port: 80, args: [\"a\\nb\"]}}", "field args: Invalid args[0]"),
    ("services: {x1: {image: a/b:1, port: 80, kind: chat}}", "field kind"),
    ("services: {x1: {image: a/b:1, port: 8001}}", "service 'x1', field port: 8001 on spark1 is already"),
    ("services: {'x;rm -rf /': {image: a/b:1, port: 80}}", "field name"),
    ("services: {x1: {image: a/b:1, port: 80, health_path: 'health'}}", "field health_path"),
    ("services: {x1: {image: a/b:1}}", "field port: Field required"),
    ("services: [a, b]", "must be a mapping of service name to settings"),
    ("servces: {}", "unknown top-level key 'servces' (did you mean 'services'?)"),
    ("services: {x1: {image: a/b:1, port: 80}, x1: {image: a/b:1, port: 81}}", "duplicate key 'x1'"),
    ("services: {x1: [", "YAML syntax error"),
])
def test_a_bad_override_names_the_file_the_service_and_the_field(tmp_path, text, words):
    message = refusal(tmp_path, text)
    assert message.startswith(f"SERVICES_OVERRIDES {tmp_path / 'services-overrides.yaml'}"), message
    assert words in message, message


def test_a_missing_override_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="SERVICES_OVERRIDES .*nope.yaml: file not found"):
        load_services_catalog(SimpleNamespace(services_overrides=tmp_path / "nope.yaml"))


def test_the_docker_command_quotes_every_value_and_expands_home_on_the_node(tmp_path):
    catalog = load(tmp_path, """
services:
  tool: {image: ghcr.io/me/tool:1.0, port: 7000, gpu: true, port_env: [PORT, APP_PORT],
         env: {GREETING: "hello; rm -rf / $(id) `id`"}, volumes: ["~/data:/data:ro", "/srv/x:/x"],
         args: ["--say", "it's $(whoami)"]}
""")
    argv = sc.run_argv(catalog.get("tool"), secret_env=("NGC_API_KEY",), started=1700000000)
    command = sc.shell_command(argv)
    home = shlex.split(command.replace('"$HOME"', "/home/me"))
    assert home == [a.replace("~/", "/home/me/", 1) if a.startswith("~/") else a for a in argv]
    assert argv[:5] == ["docker", "run", "-d", "--name", "sc-svc-tool"]
    assert ["--network", "host"] == argv[argv.index("--network"):argv.index("--network") + 2]
    assert "-e PORT=7000 -e APP_PORT=7000" in command and "--gpus all" in command
    assert "'GREETING=hello; rm -rf / $(id) `id`'" in command
    assert "-e NGC_API_KEY " in command  # by name only
    assert '-v "$HOME"/data:/data:ro' in command
    assert argv[-3:] == ["ghcr.io/me/tool:1.0", "--say", "it's $(whoami)"]
    assert "spark-control.service=tool" in argv and "spark-control.service-started=1700000000" in argv


def test_container_listing_is_read_back_from_labels():
    line = ('{"Names":"sc-svc-tool","Labels":"spark-control.service=tool,spark-control.service-kind=other,'
            'spark-control.service-port=7000,spark-control.service-started=1700000000",'
            '"State":"exited","Status":"Exited (3) 2 minutes ago","Image":"x/y:1"}\nnot json\n{"Labels":""}')
    [found] = sc.parse_list("spark2", line)
    assert (found.node, found.service, found.port, found.started, found.exit_code) == (
        "spark2", "tool", 7000, 1700000000.0, 3)


def test_the_nim_command_reads_the_key_from_stdin_and_never_holds_it():
    command = nim.login_and_run_command("docker run -d -e NGC_API_KEY img")
    assert command.startswith("IFS= read -r NGC_API_KEY && export NGC_API_KEY && printf '%s\\n' \"$NGC_API_KEY\" | "
                              "docker login nvcr.io --username '$oauthtoken' --password-stdin >/dev/null && ")
    settings = SimpleNamespace(ngc_api_key="nvapi-SECRET")
    assert nim.key_input(settings) == "nvapi-SECRET\n"
    assert "SECRET" not in command
    assert nim.scrub("denied for nvapi-SECRET", settings) == "denied for [NGC_API_KEY]"
    with pytest.raises(ServiceUnavailable, match="NGC_API_KEY is not set"):
        nim.key_input(SimpleNamespace(ngc_api_key=None))
