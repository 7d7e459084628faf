"""The lab's AWS stack, born from deploy/aws/failsoft.yaml in moto's server.

Reads a JSON request on stdin, creates the stack through moto's
CloudFormation, and prints JSON: the stack's outputs and, for every
identity of the template, credentials bound to exactly its policies.

    {"endpoint": "http://127.0.0.1:PORT", "template": "deploy/aws/failsoft.yaml",
     "stack_name": "failsoft", "parameters": {"ProcessingLimitSeconds": "5"},
     "admin": null}

`admin`: the bootstrap administrator's key ({"key": …, "secret": …}). null
makes one with the first three calls, which moto's server takes unsigned
while INITIAL_NO_AUTH_ACTION_COUNT lasts (the launcher sets it to 3 with
IAM on); every later call is signed by it. Pass it back to create more
stacks in the same moto (the IAM tests make one per removed action).

What moto 5.2.5's CloudFormation does not do, and what is done about it, all
derived from the template (no attribute of a queue or a table is written
here):
- a Number parameter used as a key of Fn::FindInMap fails (moto makes it an
  int; the mapping's keys are strings): the copy declares it a String;
- resource types it does not implement (AWS::SecretsManager::Secret) it
  skips, with the outputs that refer to them. The edge's secret key, which
  the template puts in the EdgeCredentials secret, comes from an output the
  copy adds (Fn::GetAtt [EdgeAccessKey, SecretAccessKey]);
- an AWS::IAM::User's inline Policies are ignored: the copy gives each its
  own AWS::IAM::Policy naming the user (the same inline policy);
- TimeToLiveSpecification is ignored: applied after, from the template.

Identities: moto's sts:AssumeRole checks a role's trust policy, and the
template's roles trust only ecs-tasks.amazonaws.com; so for each role the lab
makes a user with the role's policies (its managed ones attached, its inline
ones copied) and an access key. An AWS::IAM::AccessKey of the template (the
edge's) is used as it is.

Output: {"admin": {...}, "outputs": {OutputKey: value}, "identities":
{LogicalId: {"key": …, "secret": …}}, "ttl": {table: attribute}}.
"""

import copy
import json
import sys

import boto3
import yaml

LAB_SECRET_PREFIX = "LabSecretAccessKeyOf"
ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def moto_copy(template):
    """The template as moto's CloudFormation can create it (see above)."""
    t = copy.deepcopy(template)
    text = json.dumps(t.get("Resources", {}))
    for name, p in t.get("Parameters", {}).items():
        if p.get("Type") == "Number" and '"Fn::FindInMap": [' in text and ('{"Ref": "%s"}' % name) in text:
            p["Type"] = "String"
            if "AllowedValues" in p:
                p["AllowedValues"] = [str(v) for v in p["AllowedValues"]]
            if "Default" in p:
                p["Default"] = str(p["Default"])
    resources = t["Resources"]
    for lid, r in list(resources.items()):
        policies = r.get("Properties", {}).pop("Policies", None) if r["Type"] == "AWS::IAM::User" else None
        for i, policy in enumerate(policies or []):
            moved = {
                "Type": "AWS::IAM::Policy",
                "Properties": {
                    "PolicyName": policy["PolicyName"],
                    "PolicyDocument": policy["PolicyDocument"],
                    "Users": [{"Ref": lid}],
                },
            }
            if "Condition" in r:
                moved["Condition"] = r["Condition"]
            resources["%sInlinePolicy%d" % (lid, i)] = moved
    outputs = t.setdefault("Outputs", {})
    for lid, r in resources.items():
        if r["Type"] == "AWS::IAM::AccessKey":
            out = {"Value": {"Fn::GetAtt": [lid, "SecretAccessKey"]}}
            if "Condition" in r:
                out["Condition"] = r["Condition"]
            outputs[LAB_SECRET_PREFIX + lid] = out
    return t


def main():
    request = json.load(sys.stdin)
    endpoint = request["endpoint"]
    stack_name = request.get("stack_name", "failsoft")

    def client(service, key="lab", secret="lab"):
        return boto3.client(
            service,
            endpoint_url=endpoint,
            region_name=request.get("region", "us-east-1"),
            aws_access_key_id=key,
            aws_secret_access_key=secret,
        )

    admin = request.get("admin")
    if not admin:
        iam = client("iam")
        name = "failsoft-lab-bootstrap"
        try:
            iam.create_user(UserName=name)
            iam.put_user_policy(UserName=name, PolicyName="bootstrap", PolicyDocument=json.dumps(ALLOW_ALL))
        except iam.exceptions.EntityAlreadyExistsException:
            pass  # a second run against a moto without IAM checks
        k = iam.create_access_key(UserName=name)["AccessKey"]
        admin = {"key": k["AccessKeyId"], "secret": k["SecretAccessKey"]}

    def as_admin(service):
        return client(service, admin["key"], admin["secret"])

    with open(request["template"]) as f:
        template = yaml.safe_load(f)
    body = moto_copy(template)
    cfn = as_admin("cloudformation")
    existing = [
        st for st in cfn.list_stacks()["StackSummaries"]
        if st["StackName"] == stack_name and st["StackStatus"] != "DELETE_COMPLETE"
    ]
    if existing:
        # Already made (`failsoft-lab init-local` run again): its outputs only.
        stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        outputs = {k: v for k, v in outputs.items() if not k.startswith(LAB_SECRET_PREFIX)}
        json.dump({"admin": admin, "outputs": outputs, "identities": {}, "ttl": {}}, sys.stdout)
        return
    parameters = {k: str(v) for k, v in request.get("parameters", {}).items()}
    for k, v in parameters.items():
        declared = template.get("Parameters", {}).get(k)
        if declared is None:
            raise SystemExit("the template has no parameter %s" % k)
        allowed = [str(a) for a in declared.get("AllowedValues", [])]
        if allowed and v not in allowed:
            raise SystemExit("%s=%s is not one of the template's AllowedValues %s" % (k, v, allowed))
    cfn.create_stack(
        StackName=stack_name,
        TemplateBody=json.dumps(body),
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )
    stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    if stack["StackStatus"] != "CREATE_COMPLETE":
        raise SystemExit("stack %s: %s %s" % (stack_name, stack["StackStatus"], stack.get("StackStatusReason")))
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cfn.list_stack_resources(StackName=stack_name)["StackResourceSummaries"]
    }

    # TTL, as the template specifies it.
    ddb = as_admin("dynamodb")
    ttl = {}
    for lid, r in body["Resources"].items():
        spec = r.get("Properties", {}).get("TimeToLiveSpecification")
        if r["Type"] == "AWS::DynamoDB::Table" and spec and lid in physical:
            ddb.update_time_to_live(
                TableName=physical[lid],
                TimeToLiveSpecification={"Enabled": bool(spec.get("Enabled")), "AttributeName": spec["AttributeName"]},
            )
            ttl[physical[lid]] = spec["AttributeName"]

    # The identities.
    iam = as_admin("iam")
    identities = {}
    for lid, r in body["Resources"].items():
        if lid not in physical:
            continue
        if r["Type"] == "AWS::IAM::Role":
            role = physical[lid]
            user = "%s-%s" % (stack_name, lid)
            iam.create_user(UserName=user, Path="/failsoft-lab/")
            for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]:
                iam.attach_user_policy(UserName=user, PolicyArn=p["PolicyArn"])
            for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
                doc = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
                iam.put_user_policy(UserName=user, PolicyName=name, PolicyDocument=json.dumps(doc))
            k = iam.create_access_key(UserName=user)["AccessKey"]
            identities[lid] = {"key": k["AccessKeyId"], "secret": k["SecretAccessKey"], "user": user}
        elif r["Type"] == "AWS::IAM::AccessKey":
            secret = outputs.pop(LAB_SECRET_PREFIX + lid, None)
            if secret:
                identities[lid] = {"key": physical[lid], "secret": secret}

    json.dump({"admin": admin, "outputs": outputs, "identities": identities, "ttl": ttl}, sys.stdout)


main()
