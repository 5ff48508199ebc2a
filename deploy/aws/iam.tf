# Least privilege: each role gets the prefixes of the cluster bucket it uses, its own secret and the cluster key,
# nothing else (no wildcard resources; the deploy-check test refuses any S3 resource outside this bucket).

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# --- orchestrators ---

resource "aws_iam_role" "orchestrator" {
  name_prefix        = "${local.prefix}-orch-"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "orchestrator" {
  statement {
    sid       = "ListStorage"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.cluster.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["storage/*"]
    }
  }
  statement {
    sid       = "ClusterStorage"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.cluster.arn}/storage/*"]
  }
  statement {
    # aws:userid of an instance role session is `<role id>:<instance id>`: each node reads its own credential.
    sid       = "OwnNodeCredential"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.cluster.arn}/node-credentials/$${aws:userid}"]
  }
  statement {
    sid       = "NodeSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.node.arn]
  }
  statement {
    sid       = "ClusterKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.cluster.arn]
  }
}

resource "aws_iam_role_policy" "orchestrator" {
  name   = "cove-orchestrator"
  role   = aws_iam_role.orchestrator.id
  policy = data.aws_iam_policy_document.orchestrator.json
}

resource "aws_iam_instance_profile" "orchestrator" {
  name_prefix = "${local.prefix}-orch-"
  role        = aws_iam_role.orchestrator.name
}

# --- edges ---

resource "aws_iam_role" "edge" {
  name_prefix        = "${local.prefix}-edge-"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "edge" {
  statement {
    sid       = "ListStorageAndRegistry"
    actions   = ["s3:ListBucket", "s3:ListBucketMultipartUploads"]
    resources = [aws_s3_bucket.cluster.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["storage/*", "registry/*"]
    }
  }
  statement {
    sid       = "StorageAndRegistry"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    resources = ["${aws_s3_bucket.cluster.arn}/storage/*", "${aws_s3_bucket.cluster.arn}/registry/*"]
  }
  statement {
    sid       = "EdgeSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.edge.arn]
  }
  statement {
    sid       = "ClusterKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.cluster.arn]
  }
}

resource "aws_iam_role_policy" "edge" {
  name   = "cove-edge"
  role   = aws_iam_role.edge.id
  policy = data.aws_iam_policy_document.edge.json
}

resource "aws_iam_instance_profile" "edge" {
  name_prefix = "${local.prefix}-edge-"
  role        = aws_iam_role.edge.name
}

# --- the enroller (issues each orchestrator's credential on launch, removes it on termination) ---

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "enroller" {
  name_prefix        = "${local.prefix}-enroll-"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "enroller" {
  statement {
    sid       = "NodeCredentialKey"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.node_credential_key.arn]
  }
  statement {
    sid       = "NodeCredentials"
    actions   = ["s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.cluster.arn}/node-credentials/*"]
  }
  statement {
    sid       = "ClusterKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.cluster.arn]
  }
  statement {
    sid       = "LifecycleOfOrchestrators"
    actions   = ["autoscaling:CompleteLifecycleAction"]
    resources = ["arn:${local.partition}:autoscaling:${local.region}:${local.account}:autoScalingGroup:*:autoScalingGroupName/${local.orchestrator_asg_name}"]
  }
  statement {
    sid       = "OwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.enroller.arn}:*"]
  }
}

resource "aws_iam_role_policy" "enroller" {
  name   = "cove-enroller"
  role   = aws_iam_role.enroller.id
  policy = data.aws_iam_policy_document.enroller.json
}

# --- the autoscaler (optional; docs/byoc-aws.md, "Autoscaling") ---
# `cove autoscale run --provider aws-asg` holds the control plane's admin token, so it runs where the control plane
# runs (the vendor's account, or yours if you run the control plane), never on a cluster machine. It reaches the
# orchestrator group only through this role, which exists only when autoscaler_principal_arn is set: assumable by
# that principal alone and only with the external id you agreed on (a confused deputy cannot borrow it), allowed to
# raise the group's desired capacity and to terminate one of its instances, nothing else. Unsetting the variable
# (or deleting the role) cuts the autoscaler off: nodes and sandboxes keep running, scaling waits for you.

locals {
  autoscaler_enabled = var.autoscaler_principal_arn != null
}

data "aws_iam_policy_document" "autoscaler_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "AWS"
      identifiers = local.autoscaler_enabled ? [var.autoscaler_principal_arn] : []
    }
    condition {
      test     = "StringEquals"
      variable = "sts:ExternalId"
      values   = var.autoscaler_external_id == null ? [] : [var.autoscaler_external_id]
    }
  }
}

resource "aws_iam_role" "autoscaler" {
  count                = local.autoscaler_enabled ? 1 : 0
  name_prefix          = "${local.prefix}-autoscale-"
  assume_role_policy   = data.aws_iam_policy_document.autoscaler_assume.json
  max_session_duration = 3600
  tags                 = local.tags
  lifecycle {
    precondition {
      condition     = var.autoscaler_external_id != null
      error_message = "Set autoscaler_external_id with autoscaler_principal_arn: the role is assumable only with it."
    }
  }
}

data "aws_iam_policy_document" "autoscaler" {
  statement {
    # DescribeAutoScalingGroups has no resource-level permission in IAM ("*" is the only resource it takes); it
    # reads group settings and instance ids, no data. The provider then acts on the one group it was named.
    sid       = "DescribeGroups"
    actions   = ["autoscaling:DescribeAutoScalingGroups"]
    resources = ["*"]
  }
  statement {
    # Scale out (desired capacity, bounded by the group's MaxSize) and the terminate of a drained node's own
    # instance (with ShouldDecrementDesiredCapacity), on the orchestrator group only: no edge, no other group.
    sid       = "ScaleOrchestrators"
    actions   = ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"]
    resources = ["arn:${local.partition}:autoscaling:${local.region}:${local.account}:autoScalingGroup:*:autoScalingGroupName/${local.orchestrator_asg_name}"]
  }
}

resource "aws_iam_role_policy" "autoscaler" {
  count  = local.autoscaler_enabled ? 1 : 0
  name   = "cove-autoscaler"
  role   = aws_iam_role.autoscaler[0].id
  policy = data.aws_iam_policy_document.autoscaler.json
}
