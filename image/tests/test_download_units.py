"""The pure parts of downloads and disk: progress parsing, the weights comparison, the include-glob
validator, the commands' quoting (checked by a real /bin/sh), the df/du parser; and a RemoteJob on
the local transport (a real shell, no SSH), so start/poll/kill are exercised end to end."""

from __future__ import annotations

import asyncio
import shlex
import subprocess

import pytest

from app.disk import parse_usage, validate_dirname
from app.download_copy import rsync_command
from app.download_progress import Progress, split_redraws
from app.errors import InvalidInput
from app.remote_job import FollowHooks, RemoteJob, follow
from app.settings import NodeConfig, Settings
from app.shellsafe import validate_hf_include
from app.ssh import NodePool
from app.weights_verify import NodeWeights, compare

HF_OUTPUT = (
    "\rFetching 4 files:   0%|          | 0/4 [00:00<?, ?it/s]"
    "\rconfig.json: 100%|##########| 684/684 [00:00<00:00, 1.37MB/s]\n"
    "\rmodel-00001-of-00002.safetensors:  42%|####2     | 2.10G/5.00G [00:21<00:29, 99.8MB/s]"
    "\rmodel-00001-of-00002.safetensors:  50%|#####     | 2.50G/5.00G [00:25<00:25, 99.9MB/s]"
    "\rFetching 4 files:  25%|##5       | 1/4 [00:25<01:15, 25.0s/it]"  # the latest redraw: no \r after it yet
)


def test_hf_progress_sums_the_file_bars_and_counts_files():
    p = Progress()
    p.feed(HF_OUTPUT, now=0.0)
    assert p.files_done == 1 and p.files_total == 4
    assert p.bytes_done == 684 + 2_500_000_000
    assert p.bytes_total == 684 + 5_000_000_000
    # 2 of 4 files drawn (one finished), one cached? No: 1 done (config) + 1 started, 2 not started yet.
    assert p.estimated_total == p.bytes_total + 2 * p.bytes_total // 2
    p.feed("\rmodel-00001-of-00002.safetensors:  60%|######    | 3.00G/5.00G [00:30<00:20, 100MB/s]", now=5.0)
    assert p.rate_bps == pytest.approx(500_000_000 / 5.0)
    assert p.eta_s == pytest.approx((p.estimated_total - p.bytes_done) / p.rate_bps)


def test_a_redraw_cut_between_two_reads_is_joined():
    p = Progress()
    p.feed("\rmodel.safetensors:  10%|#         | 100k/1.00M [00:0", now=0)
    assert p.bytes_done == 0
    p.feed("1<00:09, 100kB/s]\r", now=1)
    assert p.bytes_done == 100_000 and p.bytes_total == 1_000_000
    assert split_redraws("a\rb\nc") == (["a", "b"], "c")


def test_unicode_bars_are_read_even_with_a_character_cut_between_two_reads():
    # Real hf draws tqdm's Unicode blocks; a poll that ends inside one gets U+FFFD on both sides of the cut.
    p = Progress()
    p.feed("\rmodel.safetensors:  42%|████\ufffd", now=0)
    p.feed("\ufffd\ufffd     | 504k/1.20M [00:00<00:01, 1.01MB/s]", now=1)
    assert p.bytes_done == 504_000 and p.bytes_total == 1_200_000
    p.feed("\rmodel.safetensors: 100%|██████████| 1.20M/1.20M [00:01<00:00, 1.01MB/s]\n", now=2)
    assert p.bytes_done == p.bytes_total == 1_200_000


def test_snapshot_commit_and_failure_text_are_kept():
    p = Progress()
    commit = "a" * 40
    p.feed(f"404 Client Error. (Request ID: Root=1-x)\n\nRepository Not Found for url: https://x.\n"
           f"/home/me/.cache/huggingface/hub/models--o--n/snapshots/{commit}\n")
    assert p.snapshot_commit == commit
    assert p.failure_detail().startswith("404 Client Error") and "Repository Not Found" in p.failure_detail()


def test_rsync_progress2_gives_bytes_and_total():
    p = Progress()
    p.feed("      1,048,576  33%  100.00MB/s    0:00:00 (xfr#1, to-chk=3/6)\r"
           "      3,145,728 100%  100.00MB/s    0:00:00 (xfr#6, to-chk=0/6)\n")
    assert p.bytes_done == 3_145_728 and p.bytes_total == 3_145_728
    last = Progress()
    last.feed("      3,598,762  99%    3.38MB/s    0:00:01 (xfr#6, to-chk=0/13)\n")
    assert last.bytes_total == 3_635_113  # what 99% implies
    last.complete()  # rsync exited 0: what it moved is the whole
    assert last.to_dict()["bytes_total"] == last.bytes_done == 3_598_762


def _node(name: str, shards: list[tuple[str, int, int]], **report) -> NodeWeights:
    rows = [{"name": n, "present": True, "size": size, "expected_size": expected,
             "problem": None if size == expected else "truncated"} for n, size, expected in shards]
    return NodeWeights(name, {"exists": True, "snapshot": "c" * 40, "shards": rows, "index": True,
                              "incomplete": [], "problem": None, **report})


def test_compare_names_the_truncated_shard_and_its_node():
    good = [("model-00001-of-00002.safetensors", 100, 100), ("model-00002-of-00002.safetensors", 90, 90)]
    cut = [good[0], ("model-00002-of-00002.safetensors", 40, 90)]
    assert compare(_node("spark1", good), [_node("spark2", good)]) == []
    problems = compare(_node("spark1", good), [_node("spark2", cut)])
    assert problems == ["spark2: shard model-00002-of-00002.safetensors is truncated (40 bytes, expected 90)",
                        "spark2: shard model-00002-of-00002.safetensors is 40 bytes, spark1 has 90"]
    missing = compare(_node("spark1", good), [_node("spark2", good[:1])])
    assert missing == ["spark2: shard model-00002-of-00002.safetensors is not in the snapshot (spark1 has it)"]
    absent = compare(_node("spark1", good), [NodeWeights("spark2", {"exists": False, "shards": []})])
    assert absent == ["spark2: the repo is not in ~/.cache/huggingface/hub"]
    unreachable = compare(_node("spark1", good), [NodeWeights("spark2", None, "spark2: no answer within 120 s")])
    assert unreachable == ["spark2: no answer within 120 s"]


def test_include_filter_limits_the_check_to_selected_shards():
    both = _node("spark1", [("model-00001-of-00002.safetensors", 1, 1), ("model-00002-of-00002.safetensors", 2, 2)])
    assert [s["name"] for s in both.only(["model-00002-*"]).to_dict()["shards"]] == ["model-00002-of-00002.safetensors"]
    assert both.only(["*.json"]).to_dict()["note"].startswith("no safetensors shards")
    assert both.only([]) is both


@pytest.mark.parametrize("pattern", ["*.safetensors", "config.json", "original/*", "model-0000[1-3]-*.safetensors",
                                     "*.gguf", "tokenizer?.json", "a" * 256])
def test_include_globs_accepted(pattern):
    assert validate_hf_include(pattern) == pattern


@pytest.mark.parametrize("pattern", ["", "-x", "--force-download", "/etc/*", "../x", "a/../b", "*.json;id",
                                     "$(id)", "`id`", "a b", "a\nb", "a|b", "a" * 257, None, 5, ["*.json"], "!x"])
def test_include_globs_refused(pattern):
    with pytest.raises(InvalidInput) as info:
        validate_hf_include(pattern, field="include")
    assert info.value.field == "include"


def test_rsync_command_quotes_every_part_and_keeps_home_unquoted():
    target = NodeConfig(name="spark2", host="192.168.1.22", user="me", port=2222, fabric_ip="10.0.0.2")
    command = rsync_command("openai/gpt-oss-120b", target)
    argv = shlex.split(command)
    assert argv[:6] == ["rsync", "-a", "--partial", "--mkpath", "--info=progress2", "--exclude=*.incomplete"]
    assert argv[6:8] == ["-e", "ssh -p 2222 -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=10"]
    assert argv[-1] == "me@10.0.0.2:.cache/huggingface/hub/models--openai--gpt-oss-120b/"  # the fabric address
    # $HOME is the only thing the node's shell expands: printf shows the argv rsync would get.
    printed = subprocess.run(["/bin/sh", "-c", command.replace("rsync ", "printf '%s\\n' ", 1)], capture_output=True,
                             text=True, env={"HOME": "/home/x y"}, check=True).stdout.splitlines()
    assert printed == [*argv[:-2], "/home/x y/.cache/huggingface/hub/models--openai--gpt-oss-120b/", argv[-1]][1:]
    six = NodeConfig(name="spark2", host="fe80::2", user="me")
    assert shlex.split(rsync_command("a/b", six))[-1] == "me@[fe80::2]:.cache/huggingface/hub/models--a--b/"
    with pytest.raises(ValueError):
        rsync_command("a/b", NodeConfig(name="spark2", host="h", user="-oProxyCommand=x"))


def test_disk_usage_parser_dedupes_filesystems_and_reads_du():
    text = ("df home /dev/nvme0n1p2 3936000000000 812000000000 2924000000000 22% /\n"
            "df huggingface /dev/nvme0n1p2 3936000000000 812000000000 2924000000000 22% /\n"
            "df nim /dev/sda1 1000 10 990 1% /mnt/nim cache\n"
            "du 65000000000\t/home/me/.cache/huggingface/hub/models--openai--gpt-oss-120b\n"
            "du 4096\t/home/me/.cache/huggingface/hub/datasets--a--b\n"
            "nim 123\t/home/me/.cache/nim\n")
    usage = parse_usage(text)
    assert [(f["mountpoint"], f["holds"]) for f in usage["filesystems"]] == [("/", ["home", "huggingface"]),
                                                                              ("/mnt/nim cache", ["nim"])]
    assert usage["caches"][0] == {"dirname": "models--openai--gpt-oss-120b", "repo_id": "openai/gpt-oss-120b",
                                  "size_bytes": 65_000_000_000}
    assert usage["nim_cache"] == {"path": "~/.cache/nim", "size_bytes": 123}


@pytest.mark.parametrize("name", ["models--openai--gpt-oss-120b", "datasets--a--b", "models--BAAI--bge-m3",
                                  "models--Systran--faster-whisper-tiny.en"])
def test_safe_dirnames(name):
    assert validate_dirname(name) == name


def test_remote_job_on_the_local_transport_runs_polls_and_is_killed(tmp_path):
    settings = Settings.from_env(environ={"HOME": str(tmp_path)})

    async def scenario():
        pool = NodePool(settings)
        node = next(iter(pool.nodes))
        job = RemoteJob(pool, node, "unitjob1")
        job.dir = f"{tmp_path}/jobs/unitjob1"  # this machine's $HOME is not the test's to write in
        await job.start('printf "%s\\r%s\\n" "$SECRET_X" two; printf three >&2', secret_env="SECRET_X",
                        secret="s3cret value")
        text = ""
        for _ in range(50):
            polled = await job.poll()
            text += polled.text
            if polled.exit_status is not None:
                break
            await asyncio.sleep(0.05)
        assert polled.exit_status == 0 and text == "s3cret value\rtwo\nthree"
        assert (await job.poll()).text == ""  # each byte is read once

        sleeper = RemoteJob(pool, node, "unitjob2")
        sleeper.dir = f"{tmp_path}/jobs/unitjob2"
        await sleeper.start("echo started; sleep 30; echo never")
        await asyncio.sleep(0.3)
        await sleeper.kill()
        for _ in range(50):
            polled = await sleeper.poll()
            if polled.exit_status is not None:
                break
            await asyncio.sleep(0.05)
        assert polled.exit_status == 143  # SIGTERM, and the wrapper lived to say so
        await sleeper.remove()
        assert not (tmp_path / "jobs" / "unitjob2").exists()

    asyncio.run(scenario())


def test_a_job_that_ended_with_more_log_than_a_poll_reads_is_followed_to_its_exit(tmp_path):
    """A restarted app reads a finished job's log from the start, 1 MiB a poll: until the last
    piece the exit status is held back, and the job must not be taken for one whose processes
    vanished (that rule fails it as "node rebooted?")."""
    settings = Settings.from_env(environ={"HOME": str(tmp_path)})

    async def scenario():
        pool = NodePool(settings)
        node = next(iter(pool.nodes))
        job = RemoteJob(pool, node, "unitjob3")
        job.dir = f"{tmp_path}/jobs/unitjob3"
        await job.start("head -c 3145728 /dev/zero | tr '\\0' x; exit 0")  # 3 MiB of "progress"
        while not (tmp_path / "jobs" / "unitjob3" / "exit").exists():
            await asyncio.sleep(0.05)
        restarted = RemoteJob(pool, node, "unitjob3")
        restarted.dir = job.dir
        read = []
        status = await follow(restarted, what="downloading org/model", cancel=asyncio.Event(), poll_s=0.05,
                              hooks=FollowHooks(output=lambda polled: read.append(len(polled.text))))
        assert status == 0 and sum(read) == 3 << 20 and len([n for n in read if n]) >= 3, read

    asyncio.run(scenario())
