"""Runs scripts/deploy-aws and scripts/teardown-aws against an in-process moto server, along
the paths a real account takes them: preflight, failed and unusable stacks, redeploys,
AMI reuse, teardown's error handling.

Run by scripts/check-deploy with the moto venv's Python (it has moto and boto3):

    python deploy/moto_scripts_test.py --aws-bin DIR [--bin-dir DIR]

--aws-bin is the directory holding the `aws` CLI (the pinned deploy venv's bin). --bin-dir
holds aws-enabled web-tier, app-tier, listener and scaler binaries (target/debug); without
it the AMI build/reuse checks are skipped.

The server runs in this process (moto.server.ThreadedMotoServer), so the test can set up
what moto cannot produce by itself and says so where it does:
- Service Quotas: moto 5.2.5 serves only the `vpc` service's quotas; the test answers
  GetServiceQuota / ListAWSDefaultServiceQuotas for EC2's L-1216C47A with chosen values.
- CloudFormation: moto never rolls a failed create back (executing a change set either
  succeeds or errors), so a ROLLBACK_COMPLETE (or DELETE_FAILED, UPDATE_ROLLBACK_FAILED)
  stack is made by setting the status of a created stack and adding the failure events
  AWS would have written.
- Packer: a stand-in `packer` on PATH registers an image in moto with the tags the real
  template sets (iras:stack, iras:inputs) and prints Packer's machine-readable artifact line.
Prints one line per check and a closing 'N passed, N failed' line.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import tempfile
import uuid
import warnings
from pathlib import Path

import boto3
from moto.cloudformation.models import Event, cloudformation_backends
from moto.server import ThreadedMotoServer
from moto.servicequotas.exceptions import NoSuchResource
from moto.servicequotas.models import ServiceQuotasBackend

REPO = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
ACCOUNT = "123456789012"
QUOTA_CODE = "L-1216C47A"

# What the patched Service Quotas answers for EC2: None = moto's own answer (no such quota).
QUOTAS: dict[str, float | None] = {"applied": None, "default": None}


def _ec2_quota(value: float) -> dict:
    return {
        "ServiceCode": "ec2",
        "ServiceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
        "QuotaCode": QUOTA_CODE,
        "QuotaArn": f"arn:aws:servicequotas:{REGION}:{ACCOUNT}:ec2/{QUOTA_CODE}",
        "QuotaName": "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
        "Value": value,
        "Unit": "None",
        "Adjustable": True,
        "GlobalQuota": False,
    }


_get_quota = ServiceQuotasBackend.get_service_quota
_list_defaults = ServiceQuotasBackend.list_aws_default_service_quotas


def get_service_quota(self, service_code: str, quota_code: str) -> dict:
    if service_code == "ec2" and quota_code == QUOTA_CODE:
        if QUOTAS["applied"] is None:
            raise NoSuchResource
        return _ec2_quota(QUOTAS["applied"])
    return _get_quota(self, service_code, quota_code)


def list_aws_default_service_quotas(self, service_code: str) -> list:
    if service_code == "ec2":
        if QUOTAS["default"] is None:
            raise NoSuchResource
        return [_ec2_quota(QUOTAS["default"])]
    return _list_defaults(self, service_code)


ServiceQuotasBackend.get_service_quota = get_service_quota  # type: ignore[method-assign]
ServiceQuotasBackend.list_aws_default_service_quotas = list_aws_default_service_quotas  # type: ignore[method-assign]

FAKE_PACKER = r"""#!/usr/bin/env bash
# Stand-in for `packer build -machine-readable -var ... ami/iras.pkr.hcl` against moto.
set -euo pipefail
[[ ${1:-} == build ]] || exit 1
declare -A var
while (($#)); do
    if [[ $1 == -var ]]; then var[${2%%=*}]=${2#*=}; shift; fi
    shift
done
for f in bin/web-tier bin/app-tier bin/listener bin/scaler model/model.onnx lib/libonnxruntime.so; do
    [[ -f ${var[dist_dir]}/$f ]] || { echo "fake packer: no $f in dist_dir" >&2; exit 1; }
done
echo build >>"$FAKE_PACKER_LOG"
base=$(aws ec2 describe-images --owners amazon --query 'Images[0].ImageId' --output text)
builder=$(aws ec2 run-instances --image-id "$base" --query 'Instances[0].InstanceId' --output text)
ami=$(aws ec2 create-image --instance-id "$builder" --name "iras-${var[stack_name]}-$RANDOM$RANDOM" \
    --tag-specifications "ResourceType=image,Tags=[{Key=iras:stack,Value=${var[stack_name]}},{Key=iras:inputs,Value=${var[inputs_hash]}}]" \
    --query ImageId --output text)
aws ec2 terminate-instances --instance-ids "$builder" >/dev/null
echo "1,,ui,say,==> amazon-ebs.iras: fake build of $ami"
echo "1,amazon-ebs.iras,artifact,0,id,${var[region]}:$ami"
"""


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, what: str, ok: bool, detail: object = "") -> bool:
        if ok:
            self.passed += 1
            print(f"ok    {what}")
        else:
            self.failed += 1
            print(f"FAIL  {what}: {detail}")
        return ok


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Env:
    def __init__(self, endpoint: str, aws_bin: str, scratch: Path) -> None:
        self.endpoint = endpoint
        self.scratch = scratch
        fake_bin = scratch / "fake-bin"
        fake_bin.mkdir()
        packer = fake_bin / "packer"
        packer.write_text(FAKE_PACKER)
        packer.chmod(0o755)
        self.packer_log = scratch / "packer.log"
        self.packer_log.touch()
        self.base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AWS_") and k not in ("CARGO_TARGET_DIR",)
        }
        self.base.update(
            PATH=f"{fake_bin}:{aws_bin}:{os.environ['PATH']}",
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
            AWS_REGION=REGION,
            AWS_DEFAULT_REGION=REGION,
            AWS_EC2_METADATA_DISABLED="true",
            AWS_MAX_ATTEMPTS="1",
            FAKE_PACKER_LOG=str(self.packer_log),
        )

    def client(self, service: str):
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def run(self, *cmd: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
        env = dict(self.base, **(extra_env or {}))
        return subprocess.run(
            list(cmd), cwd=REPO, env=env, capture_output=True, text=True, timeout=600
        )

    def deploy(self, stack: str, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(
            "scripts/deploy-aws",
            "--stack",
            stack,
            "--http-cidr",
            "203.0.113.0/24",
            "--no-wait",
            *args,
            **kw,
        )

    def teardown(self, stack: str, **kw) -> subprocess.CompletedProcess:
        return self.run("scripts/teardown-aws", "--stack", stack, "--yes", **kw)


def out(p: subprocess.CompletedProcess) -> str:
    return f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"[-3000:]


def stack_status(cfn, stack: str) -> str | None:
    try:
        return cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
    except cfn.exceptions.ClientError:
        return None


def resource_id(cfn, stack: str, logical: str) -> str | None:
    for r in cfn.list_stack_resources(StackName=stack)["StackResourceSummaries"]:
        if r["LogicalResourceId"] == logical:
            return r.get("PhysicalResourceId")
    return None


def parameter(cfn, stack: str, key: str) -> str | None:
    for p in cfn.describe_stacks(StackName=stack)["Stacks"][0].get("Parameters", []):
        if p["ParameterKey"] == key:
            return p["ParameterValue"]
    return None


def launch_template_config(ec2, lt_id: str) -> tuple[int, str]:
    """The latest version of the web launch template and its iras:web-config tag."""
    lt = ec2.describe_launch_templates(LaunchTemplateIds=[lt_id])["LaunchTemplates"][0]
    latest = lt["LatestVersionNumber"]
    data = ec2.describe_launch_template_versions(
        LaunchTemplateId=lt_id, Versions=[str(latest)]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    tags = [t for spec in data.get("TagSpecifications", []) for t in spec.get("Tags", [])]
    return latest, next((t["Value"] for t in tags if t["Key"] == "iras:web-config"), "")


def break_stack(stack: str, status: str, reason: str) -> None:
    """Puts a created stack into `status` with a failed resource event, as AWS would leave it
    (moto itself never rolls back)."""
    backend = cloudformation_backends[ACCOUNT][REGION]
    st = next(s for s in backend.stacks.values() if s.name == stack)
    st.status = status
    failed = status.replace("ROLLBACK_", "").replace("COMPLETE", "FAILED")
    failed = "CREATE_FAILED" if status == "ROLLBACK_COMPLETE" else failed
    st.events.append(
        Event(
            stack_id=st.stack_id,
            stack_name=st.name,
            logical_resource_id="WebInstance",
            physical_resource_id="",
            resource_type="AWS::EC2::Instance",
            resource_status=failed,
            resource_status_reason=reason,
            resource_properties=None,
        )
    )
    st.events.append(
        Event(
            stack_id=st.stack_id,
            stack_name=st.name,
            logical_resource_id=st.name,
            physical_resource_id=st.stack_id,
            resource_type="AWS::CloudFormation::Stack",
            resource_status=status,
            resource_status_reason=None,
            resource_properties=None,
        )
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--aws-bin", required=True)
    ap.add_argument("--bin-dir")
    args = ap.parse_args()
    c = Checks()

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    logging.getLogger("moto").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    scratch = Path(tempfile.mkdtemp(prefix="iras-moto-scripts-"))
    try:
        e = Env(f"http://127.0.0.1:{port}", args.aws_bin, scratch)
        run_checks(c, e, args)
    finally:
        server.stop()
    print(f"{c.passed} passed, {c.failed} failed")
    return 0 if c.failed == 0 else 1


def run_checks(c: Checks, e: Env, args) -> None:
    cfn, ec2 = e.client("cloudformation"), e.client("ec2")
    base_ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    name = lambda what: f"iras-{what}-{uuid.uuid4().hex[:6]}"  # noqa: E731

    # ------------------------------------------------------------ preflight: vCPU quota
    # 19 × t3.micro (2) + t3.small (2) = 40 vCPUs.
    QUOTAS.update(applied=16.0, default=None)
    s = name("quota")
    p = e.deploy(s, "--ami", base_ami)
    msg = p.stderr
    c.check(
        "quota 16 < 40 vCPUs: deploy-aws refuses, naming the quota, the numbers and both ways out",
        p.returncode != 0
        and all(
            x in msg
            for x in (QUOTA_CODE, "40 vCPUs", "16 vCPUs", "request-service-quota-increase",
                      "--max-app-instances", "at most 7 fits")
        ),
        out(p),
    )
    c.check("… and creates no stack", stack_status(cfn, s) is None, stack_status(cfn, s))

    p = e.deploy(s, "--ami", base_ami, "--clamp-to-quota")
    c.check(
        "--clamp-to-quota: MaxAppInstances 19 → 7 (7 × 2 + 2 = 16 vCPUs)",
        p.returncode == 0 and parameter(cfn, s, "MaxAppInstances") == "7",
        out(p),
    )
    e.teardown(s)

    QUOTAS.update(applied=None, default=64.0)
    s = name("quota")
    p = e.deploy(s, "--ami", base_ami)
    c.check(
        "no applied quota: the AWS default (64) is used and 40 vCPUs fit",
        p.returncode == 0
        and "quota 64 vCPUs (the AWS default" in p.stderr
        and stack_status(cfn, s) == "CREATE_COMPLETE",
        out(p),
    )
    # A web tier killed before its clean stop leaves its own reply queue; teardown finds it.
    sqs = e.client("sqs")
    response_url = cfn.describe_stack_resource(StackName=s, LogicalResourceId="ResponseQueue")[
        "StackResourceDetail"]["PhysicalResourceId"]  # fmt: skip
    leftover = sqs.create_queue(QueueName=response_url.rsplit("/", 1)[1] + "-web-i-0dead")
    p = e.teardown(s)
    gone = leftover["QueueUrl"] not in sqs.list_queues().get("QueueUrls", [])
    c.check(
        "teardown-aws deletes a reply queue a killed web tier left",
        p.returncode == 0 and gone and "reply queue" in p.stderr,
        out(p),
    )

    QUOTAS.update(applied=None, default=None)
    s = name("quota")
    p = e.deploy(s, "--ami", base_ami, "--vcpu-quota", "8")
    c.check(
        "--vcpu-quota 8 (Service Quotas unreachable): refused before anything is created",
        p.returncode != 0 and "8 vCPUs" in p.stderr and stack_status(cfn, s) is None,
        out(p),
    )
    p = e.deploy(s, "--ami", base_ami)
    c.check(
        "Service Quotas unreachable: a warning saying the quota is not checked, then the deploy",
        p.returncode == 0
        and "quota is not checked" in p.stderr
        and stack_status(cfn, s) == "CREATE_COMPLETE",
        out(p),
    )
    QUOTAS.update(applied=64.0)

    # ------------------------------------------------------------ redeploys
    web = resource_id(cfn, s, "WebInstance")
    lt = resource_id(cfn, s, "WebLaunchTemplate")
    v1, cfg1 = launch_template_config(ec2, lt)
    p = e.deploy(s, "--ami", base_ami)
    v2, _ = launch_template_config(ec2, lt)
    c.check(
        "redeploy, same parameters: web instance and launch template version unchanged",
        p.returncode == 0 and resource_id(cfn, s, "WebInstance") == web and v2 == v1
        and "unchanged" in p.stderr,
        f"{web} → {resource_id(cfn, s, 'WebInstance')}, v{v1} → v{v2}\n{out(p)}",
    )
    p = e.deploy(s, "--ami", base_ami, "--max-app-instances", "5")
    v3, cfg3 = launch_template_config(ec2, lt)
    # On AWS a new LatestVersionNumber replaces the instance (its LaunchTemplate property
    # requires replacement); moto updates nothing of an AWS::EC2::Instance, so the check
    # stops at the launch template.
    c.check(
        "redeploy, MaxAppInstances 19 → 5: a new launch template version whose config has 5",
        p.returncode == 0
        and v3 == v1 + 1
        and " 19 " in f" {cfg1} "
        and " 5 " in f" {cfg3} "
        and parameter(cfn, s, "MaxAppInstances") == "5",
        f"v{v1} {cfg1!r} → v{v3} {cfg3!r}\n{out(p)}",
    )

    # ------------------------------------------------------------ unusable stacks
    before_id = cfn.describe_stacks(StackName=s)["Stacks"][0]["StackId"]
    reason = "The requested configuration is currently not supported (moto-test)"
    break_stack(s, "ROLLBACK_COMPLETE", reason)
    p = e.deploy(s, "--ami", base_ami)
    after = cfn.describe_stacks(StackName=s)["Stacks"][0]
    c.check(
        "ROLLBACK_COMPLETE: the failure's reason printed, the stack deleted and created afresh",
        p.returncode == 0
        and reason in p.stderr
        and "deleting the rolled-back stack" in p.stderr
        and after["StackStatus"] == "CREATE_COMPLETE"
        and after["StackId"] != before_id,
        out(p),
    )
    for status, hint in (
        ("DELETE_FAILED", "teardown-aws"),
        ("UPDATE_ROLLBACK_FAILED", "continue-update-rollback"),
    ):
        break_stack(s, status, f"{status} reason (moto-test)")
        p = e.deploy(s, "--ami", base_ami)
        c.check(
            f"{status}: refused with the reason and the way out ({hint}), stack left alone",
            p.returncode != 0
            and f"{status} reason (moto-test)" in p.stderr
            and hint in p.stderr
            and stack_status(cfn, s) == status,
            out(p),
        )
    break_stack(s, "UPDATE_COMPLETE", "")  # usable again, for the teardown below
    e.teardown(s)

    # ------------------------------------------------------------ binaries and the AMI
    fake = e.scratch / "local-only"
    fake.mkdir()
    for b in ("web-tier", "app-tier", "listener", "scaler"):
        f = fake / b
        f.write_text(f"#!/bin/sh\necho '{b} 0.1.0 (backends: local)'\n")
        f.chmod(0o755)
    s = name("bins")
    p = e.deploy(s, "--bin-dir", str(fake))
    c.check(
        "--bin-dir with local-only binaries: refused ('has no AWS backend'), no Packer, no stack",
        p.returncode != 0
        and "has no AWS backend" in p.stderr
        and e.packer_log.read_text() == ""
        and stack_status(cfn, s) is None,
        out(p),
    )
    bins = args.bin_dir
    tiers = ("web-tier", "app-tier", "listener", "scaler")
    if bins and not all(
        os.access(Path(bins, b), os.X_OK)
        and "(backends:" in subprocess.run([str(Path(bins, b)), "--version"],
                                           capture_output=True, text=True).stdout
        for b in tiers
    ):
        print(f"skipped: AMI build and reuse ({bins} lacks binaries whose --version names"
              " their backends: build them from this checkout)")
        bins = None
    if bins:
        p = e.deploy(s, "--bin-dir", bins)
        builds = e.packer_log.read_text().count("build")
        images = ec2.describe_images(
            Owners=["self"], Filters=[{"Name": "tag:iras:stack", "Values": [s]}]
        )["Images"]
        tags = {t["Key"]: t["Value"] for t in (images[0].get("Tags", []) if images else [])}
        first_ami = images[0]["ImageId"] if images else None
        c.check(
            "--bin-dir with aws-enabled binaries: Packer builds an AMI tagged iras:inputs",
            p.returncode == 0 and builds == 1 and len(images) == 1
            and len(tags.get("iras:inputs", "")) == 64
            and parameter(cfn, s, "AmiId") == first_ami,
            out(p),
        )
        web = resource_id(cfn, s, "WebInstance")
        # An older AMI of the stack nobody uses, and one an app tier still runs.
        old_builder = ec2.run_instances(ImageId=base_ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        stale, in_use = (
            ec2.create_image(
                InstanceId=old_builder,
                Name=f"old-{i}-{s}",
                TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "iras:stack", "Value": s}]}],
            )["ImageId"]
            for i in range(2)
        )
        ec2.terminate_instances(InstanceIds=[old_builder])
        app = ec2.run_instances(ImageId=in_use, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        p = e.deploy(s, "--bin-dir", bins)
        left = {i["ImageId"] for i in ec2.describe_images(
            Owners=["self"], Filters=[{"Name": "tag:iras:stack", "Values": [s]}])["Images"]}
        c.check(
            "same inputs again: the AMI is reused (no Packer build), the web instance stays",
            p.returncode == 0
            and e.packer_log.read_text().count("build") == 1
            and "reusing it" in p.stderr
            and parameter(cfn, s, "AmiId") == first_ami
            and resource_id(cfn, s, "WebInstance") == web,
            out(p),
        )
        c.check(
            "old AMIs: the unused one deregistered, the one an instance runs kept",
            stale not in left and in_use in left and first_ami in left,
            f"left {left}, stale {stale}, in use {in_use}\n{out(p)}",
        )
        ec2.terminate_instances(InstanceIds=[app])
        e.teardown(s)
    elif not args.bin_dir:
        print("skipped: AMI build and reuse (needs aws-enabled binaries: --bin-dir)")

    # ------------------------------------------------------------ teardown
    s = name("td")
    other = ec2.create_image(
        InstanceId=ec2.run_instances(ImageId=base_ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"],
        Name=f"other-{s}",
        TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "iras:stack", "Value": s + "-other"}]}],
    )["ImageId"]
    p = e.teardown(s)
    c.check(
        "teardown, no such stack: exit 0, says so, another stack's AMI untouched",
        p.returncode == 0
        and f"no stack {s}" in p.stderr
        and ec2.describe_images(ImageIds=[other])["Images"],
        out(p),
    )

    p = e.deploy(s, "--ami", base_ami)
    assert p.returncode == 0, out(p)
    mine = ec2.create_image(
        InstanceId=ec2.run_instances(ImageId=base_ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"],
        Name=f"mine-{s}",
        TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "iras:stack", "Value": s}]}],
    )["ImageId"]
    p = e.teardown(
        s, extra_env={"AWS_ENDPOINT_URL_CLOUDFORMATION": "http://127.0.0.1:9"}
    )
    c.check(
        "teardown, describe-stacks fails otherwise (dead endpoint): exit non-zero, nothing deleted",
        p.returncode != 0
        and "nothing was deleted" in p.stderr
        and ec2.describe_images(ImageIds=[mine])["Images"]
        and stack_status(cfn, s) == "CREATE_COMPLETE"
        and ec2.describe_instances(InstanceIds=[resource_id(cfn, s, "WebInstance")])[
            "Reservations"][0]["Instances"][0]["State"]["Name"] == "running",
        out(p),
    )

    stopped = ec2.run_instances(
        ImageId=base_ami, MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "iras:stack", "Value": s}]}],
    )["Instances"][0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[stopped])
    tag = [{"ResourceType": "key-pair", "Tags": [{"Key": "iras:stack", "Value": s}]}]
    key = f"packer_{uuid.uuid4()}"
    ec2.create_key_pair(KeyName=key, TagSpecifications=tag)
    stranger_key = f"packer_{uuid.uuid4()}"
    ec2.create_key_pair(KeyName=stranger_key)
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    sg = ec2.create_security_group(
        GroupName=f"packer_{uuid.uuid4()}", Description="Temporary group for Packer", VpcId=vpc,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": [{"Key": "iras:stack", "Value": s}]}],
    )["GroupId"]
    p = e.teardown(s)
    state = ec2.describe_instances(InstanceIds=[stopped])["Reservations"][0]["Instances"][0]["State"]["Name"]
    keys = {k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]}
    groups = {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    c.check(
        "teardown: exit 0, a stopped instance of the stack terminated, its AMI deregistered",
        p.returncode == 0 and state == "terminated" and not ec2.describe_images(
            Owners=["self"], Filters=[{"Name": "tag:iras:stack", "Values": [s]}])["Images"],
        f"{state}\n{out(p)}",
    )
    c.check(
        "teardown: Packer's tagged temporary key pair and security group deleted",
        key not in keys and sg not in groups,
        f"{key in keys} {sg in groups}\n{out(p)}",
    )
    c.check(
        "teardown: an untagged packer_ key pair kept and listed",
        stranger_key in keys and stranger_key in p.stderr,
        out(p),
    )


if __name__ == "__main__":
    sys.exit(main())
