"""`python -m dataprep ray.submit_job=true`: the job submitted to a Ray cluster as a Ray Job, its
entrypoint built from the overrides without a shell reading them."""

import shlex

from dataprep import ray_job
from launch.plan import hydra_quote
from test_launch import hostile


def test_ray_job_entrypoint_is_quoted_and_followed(tmp_path, monkeypatch):
    calls = []

    class FakeClient:
        def __init__(self, address):
            calls.append(("address", address))
            self.statuses = iter([ray_job.JobStatus.PENDING, ray_job.JobStatus.RUNNING, ray_job.JobStatus.SUCCEEDED])

        def submit_job(self, entrypoint):
            calls.append(("entrypoint", entrypoint))
            return "raysubmit_1"

        def get_job_status(self, job_id):
            return next(self.statuses)

        def get_job_logs(self, job_id):
            return "job log\n"

    monkeypatch.setattr(ray_job, "JobSubmissionClient", FakeClient)
    out_dir = hostile(tmp_path)
    overrides = [f"output_dir={hydra_quote(out_dir)}", "ray.submit_job=true", "ray.address=ray://head:10001"]
    assert ray_job.submit("dataprep", overrides, "ray://head:10001", poll_s=0) == 0
    assert calls[0] == ("address", "ray://head:10001")
    assert shlex.split(calls[1][1]) == ["python", "-m", "dataprep", f"output_dir={hydra_quote(out_dir)}"]
