# Cluster storage: one bucket, prefixes by purpose, encrypted with the cluster's own KMS key, private, TLS only.
#   storage/           @cove/storage (template layers and manifests, snapshots, COPY uploads): edges and nodes
#   registry/          the cluster registry's blobs: edges only
#   node-credentials/  one object per orchestrator, `<role id>:<instance id>`: written by the enroller, each
#                      instance reads only its own

resource "aws_kms_key" "cluster" {
  description             = "Cove cluster ${var.name}: storage, secrets"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  tags                    = local.tags
}

resource "aws_kms_alias" "cluster" {
  name          = "alias/${local.prefix}"
  target_key_id = aws_kms_key.cluster.key_id
}

resource "aws_s3_bucket" "cluster" {
  bucket_prefix = "${local.prefix}-"
  tags          = local.tags
}

resource "aws_s3_bucket_public_access_block" "cluster" {
  bucket                  = aws_s3_bucket.cluster.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "cluster" {
  bucket = aws_s3_bucket.cluster.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "cluster" {
  bucket = aws_s3_bucket.cluster.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.cluster.arn
    }
    bucket_key_enabled = true
  }
}

# Paused sandboxes and templates are the customer's data: a deleted or overwritten object stays recoverable.
resource "aws_s3_bucket_versioning" "cluster" {
  bucket = aws_s3_bucket.cluster.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "cluster" {
  bucket = aws_s3_bucket.cluster.id
  rule {
    id     = "expire-noncurrent"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 2
    }
  }
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid     = "TLSOnly"
    effect  = "Deny"
    actions = ["s3:*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    resources = [aws_s3_bucket.cluster.arn, "${aws_s3_bucket.cluster.arn}/*"]
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "cluster" {
  bucket = aws_s3_bucket.cluster.id
  policy = data.aws_iam_policy_document.bucket.json
}

locals {
  storage_url = "s3://${aws_s3_bucket.cluster.bucket}/storage?region=${local.region}"
}
