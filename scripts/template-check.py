#!/usr/bin/env python3
"""Checks the shape of template.yaml's EC2 worker group beyond what cfn-lint knows.

cfn-lint and `sam validate --lint` check that the template is valid CloudFormation; this
checks that it is the system the README describes: the launch template (IMDSv2 with hop
limit 1, encrypted volumes, no key pair, Amazon Linux 2023 by SSM parameter, the loader as
user-data), the group (minimum 0, mixed instances, the drain hook, the metric the policies
divide by), target tracking on backlog per instance by metric math, the step policies that
leave and return to zero, and the outputs routing reads. Run with a Python that has PyYAML
(cfn-lint's venv): `python3 scripts/template-check.py [template.yaml]`.
"""
import re
import sys

import yaml


class Tagged:
    """A CloudFormation short form (!Ref, !Sub, ...) kept as tag and value."""

    def __init__(self, tag, value):
        self.tag, self.value = tag, value

    def __repr__(self):
        return f"{self.tag} {self.value!r}"


def construct(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return Tagged("!" + suffix, value)


yaml.SafeLoader.add_multi_constructor("!", construct)

checks = 0
failures = []


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        failures.append(what)


def ref(v):
    return v.value if isinstance(v, Tagged) and v.tag == "!Ref" else None


def getatt(v):
    return v.value if isinstance(v, Tagged) and v.tag == "!GetAtt" else None


def metric_ids(expr):
    return set(re.findall(r"[a-z][A-Za-z0-9_]*", expr)) - {"IF", "AND", "OR", "FILL"}


def metric_math(metrics, where):
    """The one returned expression and the metrics it reads, checked for consistency."""
    returned = [m for m in metrics if m.get("ReturnData")]
    check(len(returned) == 1 and "Expression" in returned[0], f"{where}: exactly one returned expression")
    if not returned:
        return None, {}
    expr = returned[0]["Expression"]
    stats = {m["Id"]: m["MetricStat"]["Metric"] for m in metrics if "MetricStat" in m}
    check(metric_ids(expr) <= set(stats), f"{where}: {expr!r} reads only defined metrics {sorted(stats)}")
    check(set(stats) <= metric_ids(expr), f"{where}: every metric is used by {expr!r}")
    return expr, stats


def on_heavy_queue(metric, name):
    dims = metric.get("Dimensions", [])
    return (
        metric.get("Namespace") == "AWS/SQS"
        and metric.get("MetricName") == name
        and any(d["Name"] == "QueueName" and getatt(d["Value"]) == "HeavyQueue.QueueName" for d in dims)
    )


def in_service(metric):
    dims = metric.get("Dimensions", [])
    return (
        metric.get("Namespace") == "AWS/AutoScaling"
        and metric.get("MetricName") == "GroupInServiceInstances"
        and any(d["Name"] == "AutoScalingGroupName" and ref(d["Value"]) == "WorkerGroup" for d in dims)
    )


def main(path):
    t = yaml.safe_load(open(path))
    res, params, outputs = t["Resources"], t["Parameters"], t["Outputs"]

    # The launch template.
    lt = res["WorkerLaunchTemplate"]
    check(lt["Type"] == "AWS::EC2::LaunchTemplate", "WorkerLaunchTemplate is a launch template")
    d = lt["Properties"]["LaunchTemplateData"]
    md = d.get("MetadataOptions", {})
    check(md.get("HttpTokens") == "required", "IMDSv2 required")
    check(md.get("HttpPutResponseHopLimit") == 1, "IMDS hop limit 1")
    check("KeyName" not in d, "no key pair")
    vols = d.get("BlockDeviceMappings", [])
    check(vols and all(v["Ebs"].get("Encrypted") is True for v in vols), "every volume encrypted")
    check(getatt(d["IamInstanceProfile"]["Arn"]) == "WorkerInstanceProfile.Arn", "the worker instance profile")
    image = params[ref(d["ImageId"])]
    check(image["Type"].startswith("AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"), "AMI from an SSM parameter")
    check("al2023" in image["Default"], "Amazon Linux 2023 by default")
    ud = d["UserData"]["Fn::Base64"]
    check(isinstance(ud, Tagged) and ud.tag == "!Sub", "user-data is a !Sub")
    loader = ud.value if isinstance(ud, Tagged) else ""
    check("# pixq-loader begin" in loader and "sha256sum -c" in loader, "user-data is the checked loader")
    check("AWS_SECRET_ACCESS_KEY" not in loader and "AWS_ACCESS_KEY_ID" not in loader, "no credentials in user-data")

    # The group.
    g = res["WorkerGroup"]["Properties"]
    check(str(g["MinSize"]) == "0", "the group's minimum is 0")
    check(ref(g["MaxSize"]) == "WorkerMaxInstances", "the group's maximum is a parameter")
    check("DesiredCapacity" not in g, "no desired capacity (a stack update must not reset the policies' work)")
    spec = g["MixedInstancesPolicy"]["LaunchTemplate"]["LaunchTemplateSpecification"]
    check(ref(spec["LaunchTemplateId"]) == "WorkerLaunchTemplate", "the group runs the launch template")
    dist = g["MixedInstancesPolicy"]["InstancesDistribution"]
    check(ref(dist["OnDemandPercentageAboveBaseCapacity"]) == "WorkerOnDemandPercent", "a Spot option")
    hooks = g.get("LifecycleHookSpecificationList", [])
    check(
        any(h["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING" and h["LifecycleHookName"] == "pixq-drain"
            for h in hooks),
        "a termination lifecycle hook named pixq-drain",
    )
    check(
        any("GroupInServiceInstances" in m.get("Metrics", []) for m in g.get("MetricsCollection", [])),
        "group metrics collected (the policies divide by GroupInServiceInstances)",
    )
    check("pixq-drain" in open(path.replace("template.yaml", "ec2-worker/user-data.sh")).read()
          if path.endswith("template.yaml") else True, "the bootstrap completes the pixq-drain action")

    # Target tracking on backlog per instance.
    tt = res["WorkerBacklogPolicy"]["Properties"]
    check(tt["PolicyType"] == "TargetTrackingScaling", "target tracking")
    check(ref(tt["AutoScalingGroupName"]) == "WorkerGroup", "target tracking on the group")
    cfg = tt["TargetTrackingConfiguration"]
    check(ref(cfg["TargetValue"]) == "WorkerBacklogPerInstance", "target: the backlog per instance parameter")
    expr, stats = metric_math(cfg["CustomizedMetricSpecification"]["Metrics"], "backlog policy")
    if expr:
        waiting = [i for i, m in stats.items() if on_heavy_queue(m, "ApproximateNumberOfMessagesVisible")]
        workers = [i for i, m in stats.items() if in_service(m)]
        check(waiting and workers, "backlog reads the heavy queue and the group's in-service instances")
        if waiting and workers:
            check(re.search(r"/\s*" + workers[0] + r"\b", expr) is not None, f"backlog is divided by {workers[0]}: {expr}")

    # Out of zero and back.
    alarms = {k: r["Properties"] for k, r in res.items() if r["Type"] == "AWS::CloudWatch::Alarm"}

    def step_policy_of(alarm):
        actions = [ref(a) for a in alarm.get("AlarmActions", [])]
        pols = [res[a]["Properties"] for a in actions if a in res and res[a]["Type"] == "AWS::AutoScaling::ScalingPolicy"]
        return pols[0] if pols else None

    from_zero = to_zero = None
    for name, a in alarms.items():
        p = step_policy_of(a)
        if not p or p.get("PolicyType") != "StepScaling" or ref(p["AutoScalingGroupName"]) != "WorkerGroup":
            continue
        steps = p["StepAdjustments"]
        check(p.get("AdjustmentType") == "ExactCapacity", f"{name}: exact capacity (repeated alarms do not add up)")
        if any(s["ScalingAdjustment"] >= 1 for s in steps):
            from_zero = (name, a)
        if all(s["ScalingAdjustment"] == 0 for s in steps):
            to_zero = (name, a)
    check(from_zero is not None, "a step policy that leaves zero")
    check(to_zero is not None, "a step policy that returns to zero")
    if from_zero:
        name, a = from_zero
        expr, stats = metric_math(a["Metrics"], name)
        gate = [i for i, m in stats.items() if in_service(m)]
        check(bool(gate) and re.search(gate[0] + r"\s*,\s*0\s*\)\s*==\s*0", expr or "") is not None,
              f"{name} fires only while no worker is in service: {expr}")
        check(any(on_heavy_queue(m, "ApproximateNumberOfMessagesVisible") for m in stats.values()),
              f"{name} reads the jobs waiting")
    if to_zero:
        name, a = to_zero
        expr, stats = metric_math(a["Metrics"], name)
        check(any(on_heavy_queue(m, "ApproximateNumberOfMessagesNotVisible") for m in stats.values()),
              f"{name} counts running jobs too (never scales in under work)")
        check(a["ComparisonOperator"] == "LessThanOrEqualToThreshold" and a["Threshold"] == 0, f"{name}: at zero jobs")

    # What the worker role may do to the group, and what routing and `pixq ec2` read.
    stmts = [s for p in res["WorkerRole"]["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]
    check(any("autoscaling:CompleteLifecycleAction" in s["Action"] for s in stmts), "workers complete the drain hook")
    for key, want in [("ProcessorMemorySize", "FunctionMemory"), ("ProcessorTimeout", "FunctionTimeout"),
                      ("WorkerGroupName", "WorkerGroup")]:
        check(ref(outputs.get(key, {}).get("Value")) == want, f"output {key} is !Ref {want}")

    for f in failures:
        print(f"template check failed: {f}")
    print(f"template shape: {checks - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml"))
