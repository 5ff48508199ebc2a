# The enroller issues each orchestrator its own credential: on the launch lifecycle hook it derives
# HMAC-SHA256(node-credential key, "cove-node:" + instance id) — what the edge checks (docs/security.md, "Node
# credentials") — and writes it to node-credentials/<orchestrator role id>:<instance id>, the one object that
# instance's role may read; on termination it deletes it. Nodes never see the key, edges never issue.

data "archive_file" "enroller" {
  type        = "zip"
  source_file = "${path.module}/enroller/enroller.py"
  output_path = "${path.module}/.build/enroller.zip"
}

resource "aws_cloudwatch_log_group" "enroller" {
  name              = "/aws/lambda/${local.prefix}-enroller"
  retention_in_days = 30
  kms_key_id        = aws_kms_key.cluster.arn
  tags              = local.tags
}

resource "aws_lambda_function" "enroller" {
  function_name    = "${local.prefix}-enroller"
  role             = aws_iam_role.enroller.arn
  runtime          = "python3.12"
  handler          = "enroller.handler"
  filename         = data.archive_file.enroller.output_path
  source_code_hash = data.archive_file.enroller.output_base64sha256
  timeout          = 30
  environment {
    variables = {
      KEY_SECRET_ARN = aws_secretsmanager_secret.node_credential_key.arn
      BUCKET         = aws_s3_bucket.cluster.bucket
      ROLE_ID        = aws_iam_role.orchestrator.unique_id
      ASG_NAME       = local.orchestrator_asg_name
    }
  }
  depends_on = [aws_cloudwatch_log_group.enroller]
  tags       = local.tags
}

resource "aws_cloudwatch_event_rule" "orchestrator_lifecycle" {
  name        = "${local.prefix}-orchestrator-lifecycle"
  description = "Launch and termination of Cove orchestrators: issue or revoke their node credential"
  event_pattern = jsonencode({
    source      = ["aws.autoscaling"]
    detail-type = ["EC2 Instance-launch Lifecycle Action", "EC2 Instance-terminate Lifecycle Action"]
    detail      = { AutoScalingGroupName = [local.orchestrator_asg_name] }
  })
  tags = local.tags
}

resource "aws_cloudwatch_event_target" "enroller" {
  rule = aws_cloudwatch_event_rule.orchestrator_lifecycle.name
  arn  = aws_lambda_function.enroller.arn
}

resource "aws_lambda_permission" "events" {
  statement_id  = "AllowOrchestratorLifecycleEvents"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.enroller.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.orchestrator_lifecycle.arn
}
