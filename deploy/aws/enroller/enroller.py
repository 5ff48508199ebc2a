"""Issues and revokes Cove orchestrator node credentials on Auto Scaling lifecycle events (deploy/aws/enroller.tf).

The credential is HMAC-SHA256(key, "cove-node:" + instance id) in hex: @cove/auth-tokens deriveNodeToken, which
the edge checks on every heartbeat. It is written where only that instance's role session may read it.
"""
import hashlib
import hmac
import json
import os
import re

INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,32}$")


def node_token(key: str, node_id: str) -> str:
    return hmac.new(key.encode(), f"cove-node:{node_id}".encode(), hashlib.sha256).hexdigest()


def handler(event, _context):
    import boto3  # in the Lambda runtime; imported here so node_token can be checked without it

    s3 = boto3.client("s3")
    secrets = boto3.client("secretsmanager")
    autoscaling = boto3.client("autoscaling")
    detail = event["detail"]
    # Only our group's events reach here (the rule filters), but the function checks rather than trusts.
    if detail.get("AutoScalingGroupName") != os.environ["ASG_NAME"]:
        raise ValueError("event for another Auto Scaling group")
    instance = detail["EC2InstanceId"]
    if not INSTANCE_ID.match(instance):
        raise ValueError("not an instance id")
    key_name = f"node-credentials/{os.environ['ROLE_ID']}:{instance}"
    launching = detail["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_LAUNCHING"
    if launching:
        key = secrets.get_secret_value(SecretId=os.environ["KEY_SECRET_ARN"])["SecretString"]
        s3.put_object(Bucket=os.environ["BUCKET"], Key=key_name, Body=node_token(key, instance).encode())
    else:
        s3.delete_object(Bucket=os.environ["BUCKET"], Key=key_name)
    autoscaling.complete_lifecycle_action(
        LifecycleHookName=detail["LifecycleHookName"],
        AutoScalingGroupName=detail["AutoScalingGroupName"],
        LifecycleActionToken=detail["LifecycleActionToken"],
        LifecycleActionResult="CONTINUE",
    )
    print(json.dumps({"instance": instance, "issued" if launching else "revoked": key_name}))
