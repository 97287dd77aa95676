"""Reading `docker pull`'s output without a terminal (app/pull_progress.py): layers counted from real
docker lines whatever the chunking of the polls, layers already on the node count as done, and a
failure is explained in docker's own words."""

from __future__ import annotations

from app.pull_progress import PullProgress

# Real docker 27 output of `docker pull ubuntu:24.04 > file` (no TTY), one layer already present.
REAL = """24.04: Pulling from library/ubuntu
a1b2c3d4e5f6: Already exists
0123456789ab: Pulling fs layer
fedcba987654: Pulling fs layer
fedcba987654: Waiting
0123456789ab: Verifying Checksum
0123456789ab: Download complete
0123456789ab: Pull complete
fedcba987654: Verifying Checksum
fedcba987654: Download complete
fedcba987654: Pull complete
Digest: sha256:99c35190e22d294cdace2783ac55effc69d32896daaa265f0bbedbcde4fbe3e5
Status: Downloaded newer image for ubuntu:24.04
docker.io/library/ubuntu:24.04
"""


def test_layers_are_counted_whatever_the_chunks_and_the_fraction_only_rises():
    progress, fractions = PullProgress(), []
    for start in range(0, len(REAL), 7):  # a poll can end mid-line
        progress.feed(REAL[start:start + 7])
        fractions.append(progress.to_dict()["fraction"])
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert progress.to_dict() == {"layers_total": 3, "layers_downloaded": 3, "layers_done": 3, "fraction": 1.0,
                                  "digest": "sha256:99c35190e22d294cdace2783ac55effc69d32896daaa265f0bbedbcde4fbe3e5"}
    assert progress.status == "Downloaded newer image for ubuntu:24.04"


def test_midway_a_downloaded_layer_counts_half():
    progress = PullProgress()
    progress.feed("\n".join(REAL.splitlines()[:7]) + "\n")  # one present, one downloaded, one waiting
    assert progress.to_dict()["layers_total"] == 3
    assert (progress.to_dict()["layers_downloaded"], progress.to_dict()["layers_done"]) == (2, 1)
    assert progress.to_dict()["fraction"] == 0.5


def test_a_failure_is_told_in_dockers_words():
    progress = PullProgress()
    progress.feed("1.0: Pulling from x/y\nabcdef012345: Pulling fs layer\n"
                  "failed to register layer: write /var/lib/docker/overlay2/l/x: no space left on device")
    assert progress.failure_detail() == ("failed to register layer: write /var/lib/docker/overlay2/l/x: "
                                         "no space left on device")
    denied = PullProgress()
    denied.feed("Error response from daemon: pull access denied for example/x, repository does not exist\n")
    assert denied.failure_detail().startswith("Error response from daemon: pull access denied for example/x")
    assert denied.to_dict()["fraction"] == 0.0


def test_lines_before_pulling_from_do_not_end_the_list_of_layers():
    # A warning docker prints first (a login's "WARNING! Your password will be stored unencrypted")
    # must not make the first "Already exists" lines look like a finished pull (100 %, then back).
    progress, fractions = PullProgress(), []
    lines = ["WARNING! Your password will be stored unencrypted in /home/u/.docker/config.json.",
             "Login Succeeded", *REAL.splitlines()]
    for line in lines:
        progress.feed(line + "\n")
        fractions.append(progress.to_dict()["fraction"])
    assert fractions == sorted(fractions) and fractions[-1] == 1.0, fractions
    assert fractions[lines.index("a1b2c3d4e5f6: Already exists")] == 0.0


def test_pull_jobs_found_after_a_restart_are_validated_like_user_input():
    """What a node's meta.json says is checked before it names a service or reaches a command."""
    import json

    from app.remote_job import FoundJob
    from app.service_pull import found_pulls, job_meta

    def job(job_id: str, meta: object) -> FoundJob:
        text = meta if isinstance(meta, str) else json.dumps(meta)
        return FoundJob(job_id, text, exit_status=None, running=True, killed=False)

    good = json.loads(job_meta("whisper", "spark2", "ghcr.io/x/whisper:1.0", 1.5))
    found = [job("svcpull0123456789ab", good),
             job("svcpull0123456789ac", {**good, "image": "x;rm -rf ~"}),
             job("svcpull0123456789ad", {**good, "service": "../etc"}),
             job("svcpull0123456789ae", {**good, "node": "spark1"}),
             job("svcpull0123456789af", {**good, "started": float("inf")}),
             job("svcpull0123456789b0", "not json"),
             job("svcpull0123456789b1", {**good, "kind": "something-else"}),
             job("0123456789abd", good)]  # a download's job name: not a pull's
    pulls, problems = found_pulls("spark2", found)
    assert [(p.job.job_id, p.service, p.image) for p in pulls] == [
        ("svcpull0123456789ab", "whisper", "ghcr.io/x/whisper:1.0"),
        ("svcpull0123456789af", "whisper", "ghcr.io/x/whisper:1.0")]
    assert pulls[0].started == 1.5 and pulls[1].started > 1e9  # an unusable time becomes "now"
    assert [p.split(":")[0] for p in problems] == [
        "job svcpull0123456789ac on spark2", "job svcpull0123456789ad on spark2",
        "job svcpull0123456789ae on spark2", "job svcpull0123456789b0 on spark2"]
    assert "spark1" in problems[2]
