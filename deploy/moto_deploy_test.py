"""Deploys deploy/cloudformation/iras.yaml against a moto server and checks what it created.

Run by scripts/check-deploy with the moto venv's Python (it has boto3):

    python deploy/moto_deploy_test.py --endpoint http://127.0.0.1:PORT [--env-out FILE]

The stack is created without AmiId, so everything but the web instance (queues, dead-letter
queues, buckets, bucket policies, roles, instance profiles, security groups) is deployed.
Then every resource is read back from its own service (not from CloudFormation) and checked:
redrive policies, SSE, public access blocks, encryption, policy statements, ingress rules.
With --env-out it writes the stack's queue URLs and bucket names as an env file the tiers
can run against. Prints one line per check and a closing 'N passed, N failed' line.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import unquote

import boto3

TEMPLATE = Path(__file__).resolve().parent / "cloudformation" / "iras.yaml"
REGION = "us-east-1"


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, what: str, ok: bool, detail: object = "") -> None:
        if ok:
            self.passed += 1
            print(f"ok    {what}")
        else:
            self.failed += 1
            print(f"FAIL  {what}: {detail}")


def client(service: str, endpoint: str):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def template() -> dict:
    """The template as plain data; intrinsic-function tags (!Ref, !Sub...) become values."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def any_tag(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_mapping(node, deep=True)

    Loader.add_multi_constructor("!", any_tag)
    return yaml.load(TEMPLATE.read_text(), Loader=Loader)  # noqa: S506 - SafeLoader subclass


def statements(doc) -> list[dict]:
    if isinstance(doc, str):
        doc = unquote(doc)
        try:
            doc = json.loads(doc)
        except json.JSONDecodeError:
            # moto returns an inline role policy made by CloudFormation as a Python repr.
            doc = ast.literal_eval(doc)
    st = doc["Statement"]
    return st if isinstance(st, list) else [st]


def as_list(v) -> list:
    return v if isinstance(v, list) else [v]


def actions_by_sid(doc) -> dict[str, set[str]]:
    return {s.get("Sid", ""): set(as_list(s["Action"])) for s in statements(doc)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--env-out")
    args = ap.parse_args()
    c = Checks()

    cfn = client("cloudformation", args.endpoint)
    ec2 = client("ec2", args.endpoint)
    sqs = client("sqs", args.endpoint)
    s3 = client("s3", args.endpoint)
    iam = client("iam", args.endpoint)

    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])[
        "Subnets"
    ][0]
    stack = f"iras-check-{uuid.uuid4().hex[:8]}"
    cidr = "203.0.113.0/24"
    port = "8000"
    # Not the default, so the check below sees the parameter reach the web role's policy.
    app_type = "t3.nano"
    cfn.create_stack(
        StackName=stack,
        TemplateBody=TEMPLATE.read_text(),
        Capabilities=["CAPABILITY_IAM"],
        Parameters=[
            {"ParameterKey": "VpcId", "ParameterValue": vpc["VpcId"]},
            {"ParameterKey": "SubnetId", "ParameterValue": subnet["SubnetId"]},
            {"ParameterKey": "HttpCidr", "ParameterValue": cidr},
            {"ParameterKey": "HttpPort", "ParameterValue": port},
            {"ParameterKey": "MaxReceiveCount", "ParameterValue": "4"},
            {"ParameterKey": "AppInstanceType", "ParameterValue": app_type},
        ],
    )
    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline:
        desc = cfn.describe_stacks(StackName=stack)["Stacks"][0]
        status = desc["StackStatus"]
        if not status.endswith("IN_PROGRESS"):
            break
        time.sleep(0.5)
    c.check(f"stack {stack} created", status == "CREATE_COMPLETE", status)
    if status != "CREATE_COMPLETE":
        events = cfn.describe_stack_events(StackName=stack)["StackEvents"]
        for e in events:
            if "FAILED" in e.get("ResourceStatus", ""):
                print("      ", e["LogicalResourceId"], e.get("ResourceStatusReason"))
        print(f"moto-deploy: {c.passed} passed, {c.failed} failed")
        return 1
    # What moto really created: it skips resource types it does not support (with a warning
    # in its log). The known gaps are listed; anything else missing is a failure.
    created = {
        r["LogicalResourceId"]
        for r in cfn.list_stack_resources(StackName=stack)["StackResourceSummaries"]
        if r.get("LogicalResourceId") and r.get("ResourceStatus") == "CREATE_COMPLETE"
    }
    declared = {
        k for k, v in template()["Resources"].items() if v.get("Condition") != "HasAmi"
    }
    moto_gaps = {"InputBucketPolicy", "OutputBucketPolicy", "QueuesTlsOnlyPolicy"}
    c.check(
        "every resource but the web instance created (moto lacks AWS::S3::BucketPolicy "
        "and AWS::SQS::QueuePolicy)",
        declared - created <= moto_gaps,
        sorted(declared - created),
    )
    out = {o["OutputKey"]: o["OutputValue"] for o in desc.get("Outputs", [])}
    expected_outputs = {
        "RequestQueueUrl", "ResponseQueueUrl", "RequestDeadLetterQueueUrl",
        "ResponseDeadLetterQueueUrl", "InputBucketName", "OutputBucketName",
        "AppTierInstanceProfileName", "AppTierInstanceProfileArn", "WebInstanceProfileName",
        "WebSecurityGroupId", "AppSecurityGroupId",
    }  # fmt: skip
    c.check("outputs present", expected_outputs <= set(out), expected_outputs - set(out))
    c.check("no web instance without AmiId", "WebInstanceId" not in out, out.get("WebInstanceId"))

    # Queues: SSE, redrive to their own dead-letter queue after MaxReceiveCount receives.
    for q, dlq in (("RequestQueueUrl", "RequestDeadLetterQueueUrl"),
                   ("ResponseQueueUrl", "ResponseDeadLetterQueueUrl")):  # fmt: skip
        attrs = sqs.get_queue_attributes(QueueUrl=out[q], AttributeNames=["All"])["Attributes"]
        dlq_attrs = sqs.get_queue_attributes(QueueUrl=out[dlq], AttributeNames=["All"])[
            "Attributes"
        ]
        redrive = json.loads(attrs.get("RedrivePolicy", "{}"))
        c.check(
            f"{q}: redrive to its DLQ after 4 receives",
            redrive.get("deadLetterTargetArn") == dlq_attrs["QueueArn"]
            and int(redrive.get("maxReceiveCount", 0)) == 4,
            redrive,
        )
        for name, a in ((q, attrs), (dlq, dlq_attrs)):
            c.check(
                f"{name}: SqsManagedSseEnabled",
                str(a.get("SqsManagedSseEnabled", "")).lower() == "true",
                a.get("SqsManagedSseEnabled"),
            )
            if "QueuesTlsOnlyPolicy" in created:
                policy, where = json.loads(a.get("Policy", "{}")), ""
            else:
                # moto 5.2.5 does not create AWS::SQS::QueuePolicy: read the template's.
                props = template()["Resources"]["QueuesTlsOnlyPolicy"]["Properties"]
                logical = name.removesuffix("Url")
                policy = props["PolicyDocument"] if logical in props["Queues"] else {}
                where = " (in the template: moto does not create AWS::SQS::QueuePolicy)"
            denies = [st for st in policy.get("Statement", [])
                      if st.get("Effect") == "Deny"
                      and st.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")
                      in ("false", False)]  # fmt: skip
            c.check(f"{name}: TLS-only queue policy{where}", len(denies) == 1, policy)

    # The redrive really works: a message received 4 times lands in the dead-letter queue.
    rq, rdlq = out["RequestQueueUrl"], out["RequestDeadLetterQueueUrl"]
    sqs.send_message(QueueUrl=rq, MessageBody="poison")
    for _ in range(4):
        sqs.receive_message(QueueUrl=rq, VisibilityTimeout=0, WaitTimeSeconds=1)
    sqs.receive_message(QueueUrl=rq, VisibilityTimeout=0, WaitTimeSeconds=1)
    moved = sqs.receive_message(QueueUrl=rdlq, WaitTimeSeconds=2).get("Messages", [])
    c.check("a message received 4 times moves to the DLQ", [m["Body"] for m in moved] == ["poison"],
            moved)  # fmt: skip

    # Buckets: Block Public Access (all four), default encryption, TLS-only policy.
    for b in ("InputBucketName", "OutputBucketName"):
        name = out[b]
        pab_keys = ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls",
                    "RestrictPublicBuckets")  # fmt: skip
        try:
            pab = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
            c.check(f"{b}: public access fully blocked", all(pab.get(k) for k in pab_keys), pab)
        except s3.exceptions.ClientError as e:
            if "NoSuchPublicAccessBlockConfiguration" not in str(e):
                raise
            # moto 5.2.5 applies only BucketEncryption and Tags of an AWS::S3::Bucket made by
            # CloudFormation; the block is then checked where it is declared, the template.
            logical = b.removesuffix("Name")
            pab = template()["Resources"][logical]["Properties"]["PublicAccessBlockConfiguration"]
            c.check(f"{b}: public access fully blocked (in the template: moto's CloudFormation "
                    "does not apply PublicAccessBlockConfiguration)",
                    all(pab.get(k) is True for k in pab_keys), pab)  # fmt: skip
        enc = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]
        algo = enc["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]
        c.check(f"{b}: default encryption", algo == "AES256", enc)
        if f"{b.removesuffix('Name')}Policy" in created:
            pol = statements(s3.get_bucket_policy(Bucket=name)["Policy"])
            where = ""
        else:
            logical = f"{b.removesuffix('Name')}Policy"
            pol = statements(template()["Resources"][logical]["Properties"]["PolicyDocument"])
            where = " (in the template: moto does not create AWS::S3::BucketPolicy)"
        c.check(
            f"{b}: policy denies plain HTTP{where}",
            any(s["Effect"] == "Deny" and "aws:SecureTransport" in json.dumps(s) for s in pol),
            pol,
        )

    # Retention: both buckets expire their objects after RetentionDays, when it is not 0
    # (moto's CloudFormation does not apply lifecycle rules: checked in the template).
    resources = template()["Resources"]
    for logical in ("InputBucket", "OutputBucket"):
        rule = resources[logical]["Properties"]["LifecycleConfiguration"]
        condition, rules = rule[0], rule[1]["Rules"][0]
        c.check(
            f"{logical}: objects expire after RetentionDays (in the template, condition "
            f"{condition}: moto's CloudFormation does not apply lifecycle rules)",
            condition == "HasRetention"
            and rules["ExpirationInDays"] == "RetentionDays"
            and rules["Status"] == "Enabled",
            rule,
        )

    # Roles and instance profiles: exactly the actions the issue allows.
    def role_policy(profile_output: str) -> dict:
        prof = iam.get_instance_profile(InstanceProfileName=out[profile_output])
        roles = prof["InstanceProfile"]["Roles"]
        c.check(f"{profile_output}: one role", len(roles) == 1, roles)
        trust = statements(roles[0]["AssumeRolePolicyDocument"])
        c.check(
            f"{profile_output}: role assumable by EC2 only",
            [s["Principal"] for s in trust] == [{"Service": "ec2.amazonaws.com"}],
            trust,
        )
        names = iam.list_role_policies(RoleName=roles[0]["RoleName"])["PolicyNames"]
        attached = iam.list_attached_role_policies(RoleName=roles[0]["RoleName"])
        c.check(f"{profile_output}: no managed policies", not attached["AttachedPolicies"],
                attached)  # fmt: skip
        # The role's own policy, and the logs-and-sessions policy both roles share.
        c.check(f"{profile_output}: two inline policies, one of them iras-logs-and-sessions",
                len(names) == 2 and "iras-logs-and-sessions" in names, names)  # fmt: skip
        own = [n for n in names if n != "iras-logs-and-sessions"][:1]
        doc = iam.get_role_policy(RoleName=roles[0]["RoleName"], PolicyName=own[0])
        shared.append(statements(
            iam.get_role_policy(RoleName=roles[0]["RoleName"],
                                PolicyName="iras-logs-and-sessions")["PolicyDocument"]))  # fmt: skip
        return doc["PolicyDocument"]

    shared: list[list[dict]] = []

    app = role_policy("AppTierInstanceProfileName")
    app_actions = set().union(*actions_by_sid(app).values())
    c.check(
        "app role: only its queue and bucket actions",
        app_actions == {
            "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
            "sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:SendMessage",
            "s3:PutObject", "s3:GetObject", "s3:ListBucket", "ec2:CreateTags",
        },
        app_actions,
    )  # fmt: skip
    app_by_sid = {s["Sid"]: s for s in statements(app)}
    response_name = out["ResponseQueueUrl"].rsplit("/", 1)[1]
    c.check("app role: sends only to the response queue and the web tiers' own reply queues",
            [r.rsplit(":", 1)[1] for r in as_list(app_by_sid["SendResponses"]["Resource"])]
            == [response_name, f"{response_name}-web-*"],
            app_by_sid["SendResponses"])  # fmt: skip
    c.check("app role: reads only the input bucket (claim checks)",
            as_list(app_by_sid["ReadClaimChecks"]["Resource"]) == [f"arn:aws:s3:::{out['InputBucketName']}/*"],
            app_by_sid["ReadClaimChecks"])  # fmt: skip
    ec2_sids = [s.get("Sid") for s in statements(app)
                if any(a.startswith("ec2:") for a in as_list(s["Action"]))]  # fmt: skip
    c.check("app role: no EC2 but the ready tag",
            ec2_sids == ["TagItselfReady"], ec2_sids)  # fmt: skip
    ready = app_by_sid["TagItselfReady"]
    c.check("app role: tags only the key iras:ready, only on this stack's app tiers",
            as_list(ready["Action"]) == ["ec2:CreateTags"]
            and ready["Condition"]["StringEquals"].get("aws:ResourceTag/iras:stack") == stack
            and ready["Condition"]["StringEquals"].get("aws:ResourceTag/iras:role") == "app-tier"
            and as_list(ready["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"])
            == ["iras:ready"],
            ready)  # fmt: skip

    web = role_policy("WebInstanceProfileName")
    web_by_sid = {s["Sid"]: s for s in statements(web)}
    queue_arn = {q: sqs.get_queue_attributes(QueueUrl=out[q], AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"] for q in ("RequestQueueUrl", "ResponseQueueUrl")}  # fmt: skip
    sqs_grants = sorted((a, r) for st in statements(web) for a in as_list(st["Action"])
                        if a.startswith("sqs:") for r in as_list(st["Resource"]))  # fmt: skip
    c.check("web role: sends requests, takes responses, runs its own reply queue, nothing more",
            sqs_grants == sorted(
                [(a, queue_arn["RequestQueueUrl"]) for a in
                 ("sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes")]
                + [(a, queue_arn["ResponseQueueUrl"]) for a in
                   ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueUrl",
                    "sqs:GetQueueAttributes")]
                + [(a, queue_arn["ResponseQueueUrl"] + "-web-*") for a in
                   ("sqs:CreateQueue", "sqs:SetQueueAttributes", "sqs:DeleteQueue",
                    "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueUrl",
                    "sqs:GetQueueAttributes")]),
            sqs_grants)  # fmt: skip
    run = web_by_sid["RunTaggedAppTierInstances"]
    c.check("web role: RunInstances only with the stack tag",
            run["Condition"]["StringEquals"].get("aws:RequestTag/iras:stack") == stack
            and run["Condition"]["StringEquals"].get("aws:RequestTag/iras:role") == "app-tier"
            and run["Condition"]["StringEquals"].get("ec2:InstanceProfile", "").endswith(
                out["AppTierInstanceProfileName"]),
            run)  # fmt: skip
    c.check(f"web role: RunInstances only as {app_type} or the fallback t3a.micro, IMDSv2 required",
            as_list(run["Condition"]["StringEquals"].get("ec2:InstanceType")) == [app_type, "t3a.micro"]
            and run["Condition"]["StringEquals"].get("ec2:MetadataHttpTokens") == "required",
            run)  # fmt: skip
    account = client("sts", args.endpoint).get_caller_identity()["Account"]
    volume_arn = f"arn:aws:ec2:{REGION}:{account}:volume/*"
    vol = web_by_sid.get("RunOnlyWithEncryptedVolumes", {})
    c.check("web role: RunInstances creates only encrypted volumes",
            as_list(vol.get("Resource")) == [volume_arn]
            and str(vol.get("Condition", {}).get("Bool", {}).get("ec2:Encrypted")).lower() == "true",
            vol)  # fmt: skip
    granted_volumes = [s.get("Sid") for s in statements(web)
                       if any(r.endswith(":volume/*") for r in as_list(s["Resource"]))]  # fmt: skip
    c.check("web role: volumes granted by that statement only",
            granted_volumes == ["RunOnlyWithEncryptedVolumes"], granted_volumes)  # fmt: skip
    term = web_by_sid["TerminateOnlyThisStacksInstances"]
    c.check("web role: TerminateInstances only on this stack's app tiers",
            term["Condition"]["StringEquals"].get("aws:ResourceTag/iras:stack") == stack
            and term["Condition"]["StringEquals"].get("aws:ResourceTag/iras:role") == "app-tier",
            term)  # fmt: skip
    tag = web_by_sid["TagOnlyAtLaunch"]
    c.check("web role: CreateTags only within RunInstances",
            tag["Condition"]["StringEquals"].get("ec2:CreateAction") == "RunInstances", tag)  # fmt: skip
    pr = web_by_sid["PassOnlyTheAppTierRole"]
    app_role = iam.get_instance_profile(InstanceProfileName=out["AppTierInstanceProfileName"])[
        "InstanceProfile"]["Roles"][0]["Arn"]  # fmt: skip
    c.check("web role: PassRole for the app-tier role only", pr["Resource"] == app_role, pr)
    wildcard = [s["Sid"] for s in statements(web) if as_list(s["Resource"]) == ["*"]]
    c.check("web role: '*' only for DescribeInstances", wildcard == ["DescribeInstances"], wildcard)

    # Logs and Session Manager: one log group per stack with a retention; both roles may
    # write streams into it and nothing else of CloudWatch Logs; Session Manager's five.
    logs = client("logs", args.endpoint)
    group = f"/iras/{stack}"
    found = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    c.check(f"log group {group} with 14 days retention",
            [(g["logGroupName"], g.get("retentionInDays")) for g in found] == [(group, 14)],
            found)  # fmt: skip
    c.check("LogGroupName output", out.get("LogGroupName") == group, out.get("LogGroupName"))
    c.check("both roles carry the same logs-and-sessions policy",
            len(shared) == 2 and shared[0] == shared[1], shared)  # fmt: skip
    by_sid = {s["Sid"]: s for s in shared[0]} if shared else {}
    log_st = by_sid.get("ShipLogsToTheStacksGroup", {})
    group_arn = f"arn:aws:logs:{REGION}:{account}:log-group:{group}"
    c.check("logs: only CreateLogStream, PutLogEvents, DescribeLogStreams on the stack's group",
            set(as_list(log_st.get("Action"))) == {
                "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"}
            and as_list(log_st.get("Resource")) == [group_arn, f"{group_arn}:log-stream:*"],
            log_st)  # fmt: skip
    ssm_st = by_sid.get("SessionManagerChannels", {})
    c.check("sessions: ssm:UpdateInstanceInformation and the four ssmmessages channels only",
            set(as_list(ssm_st.get("Action"))) == {
                "ssm:UpdateInstanceInformation", "ssmmessages:CreateControlChannel",
                "ssmmessages:CreateDataChannel", "ssmmessages:OpenControlChannel",
                "ssmmessages:OpenDataChannel"},
            ssm_st)  # fmt: skip
    c.check("logs-and-sessions: nothing else", set(by_sid) == {
        "ShipLogsToTheStacksGroup", "SessionManagerChannels"}, sorted(by_sid))  # fmt: skip

    # Security groups: web takes HTTP from the CIDR only; app takes nothing.
    sgs = {
        g["GroupId"]: g
        for g in ec2.describe_security_groups(
            GroupIds=[out["WebSecurityGroupId"], out["AppSecurityGroupId"]]
        )["SecurityGroups"]
    }
    web_in = sgs[out["WebSecurityGroupId"]]["IpPermissions"]
    c.check(
        "web SG: only the HTTP port from HttpCidr",
        [(p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in web_in]
        == [(int(port), int(port), [cidr])],
        web_in,
    )
    app_in = sgs[out["AppSecurityGroupId"]]["IpPermissions"]
    c.check("app SG: no inbound rule", app_in == [], app_in)
    want_egress = [("tcp", 80, 80, ("0.0.0.0/0",)), ("tcp", 443, 443, ("0.0.0.0/0",))]
    for name in ("WebSecurityGroupId", "AppSecurityGroupId"):
        egress = sgs[out[name]]["IpPermissionsEgress"]
        rules = sorted((p["IpProtocol"], p.get("FromPort"), p.get("ToPort"),
                        tuple(r["CidrIp"] for r in p.get("IpRanges", []))) for p in egress)  # fmt: skip
        where = ""
        if rules == [("-1", None, None, ("0.0.0.0/0",))]:
            # moto 5.2.5's CloudFormation leaves a group's default allow-all egress in place
            # instead of SecurityGroupEgress; the rules are then checked in the template.
            logical = name.removesuffix("Id")
            declared = template()["Resources"][logical]["Properties"]["SecurityGroupEgress"]
            rules = sorted((r["IpProtocol"], int(r["FromPort"]), int(r["ToPort"]), (r["CidrIp"],))
                           for r in declared)  # fmt: skip
            where = " (in the template: moto's CloudFormation keeps the default egress)"
        c.check(f"{name.removesuffix('Id')}: egress HTTPS (AWS APIs) and HTTP (Ubuntu archive) "
                f"only{where}", rules == want_egress, rules)  # fmt: skip

    if args.env_out:
        Path(args.env_out).write_text(
            "".join(
                f"{k}={v}\n"
                for k, v in {
                    "IRAS_STACK_NAME": stack,
                    "IRAS_REQUEST_QUEUE": out["RequestQueueUrl"],
                    "IRAS_RESPONSE_QUEUE": out["ResponseQueueUrl"],
                    "IRAS_INPUT_BUCKET": out["InputBucketName"],
                    "IRAS_OUTPUT_BUCKET": out["OutputBucketName"],
                }.items()
            )
        )
    print(f"moto-deploy: {c.passed} passed, {c.failed} failed")
    return 0 if c.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
