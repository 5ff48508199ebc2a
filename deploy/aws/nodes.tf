# Edges and orchestrators: Auto Scaling groups of the Cove machine image, private subnets, no public address,
# IMDSv2 only with a hop limit of 1 (a sandbox's packets, one hop further, never reach the metadata service).

locals {
  edge_user_data = templatefile("${path.module}/templates/edge-user-data.yaml.tftpl", {
    region          = local.region
    edge_secret_arn = aws_secretsmanager_secret.edge.arn
    bucket          = aws_s3_bucket.cluster.bucket
    storage_url     = local.storage_url
    sandbox_domain  = var.sandbox_domain
    # COVE_EDGE_PUBLIC_URL: where clients reach the edge API port (template COPY upload URLs point there).
    api_url         = "https://${aws_lb.front.dns_name}:${local.ports.edge_api}"
    control_plane   = var.control_plane_url
    otlp_endpoint   = var.otlp_endpoint == null ? "" : var.otlp_endpoint
    # Both or neither (checked on the edge launch template): the edge refuses an issuer without an audience.
    oidc_issuer   = var.oidc_issuer == null ? "" : var.oidc_issuer
    oidc_audience = var.oidc_audience == null ? "" : var.oidc_audience
  })
  orchestrator_user_data = templatefile("${path.module}/templates/orchestrator-user-data.yaml.tftpl", {
    region          = local.region
    node_secret_arn = aws_secretsmanager_secret.node.arn
    credential_s3   = "s3://${aws_s3_bucket.cluster.bucket}/node-credentials"
    edge_url        = "https://${aws_lb.cluster.dns_name}:${local.ports.edge_api}"
    registry_url    = "https://${aws_lb.cluster.dns_name}:${local.ports.registry}"
    storage_url     = local.storage_url
    warm_pool       = var.orchestrator_warm_pool
    otlp_endpoint   = var.otlp_endpoint == null ? "" : var.otlp_endpoint
  })
}

resource "aws_launch_template" "edge" {
  name_prefix   = "${local.prefix}-edge-"
  image_id      = var.ami_id
  instance_type = var.edge_instance_type
  user_data     = base64encode(local.edge_user_data)
  iam_instance_profile {
    arn = aws_iam_instance_profile.edge.arn
  }
  network_interfaces {
    associate_public_ip_address = false
    security_groups             = [aws_security_group.edge.id]
  }
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size = 30
      volume_type = "gp3"
      encrypted   = true
      kms_key_id  = aws_kms_key.cluster.arn
    }
  }
  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${local.prefix}-edge", "cove:role" = "edge" })
  }
}

resource "aws_autoscaling_group" "edge" {
  name_prefix         = "${local.prefix}-edge-"
  min_size            = var.edge_count.min
  max_size            = var.edge_count.max
  desired_capacity    = var.edge_count.desired
  vpc_zone_identifier = local.private_subnet_ids
  target_group_arns   = concat([for tg in aws_lb_target_group.front : tg.arn], [for tg in aws_lb_target_group.cluster : tg.arn])
  health_check_type   = "ELB"
  launch_template {
    id      = aws_launch_template.edge.id
    version = aws_launch_template.edge.latest_version
  }
  # A new image or config replaces edges one at a time behind the load balancers.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 50
    }
  }
  lifecycle {
    precondition {
      condition     = var.edge_count.max == 1 || var.create_redis
      error_message = "More than one edge needs create_redis = true: edges share their sandbox catalog in Redis."
    }
    precondition {
      condition     = (var.oidc_issuer == null) == (var.oidc_audience == null)
      error_message = "Set oidc_issuer and oidc_audience together (or neither): the edges check both on every token."
    }
  }
  dynamic "tag" {
    for_each = local.tags
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}

locals {
  orchestrator_asg_name = "${local.prefix}-orchestrators"
}

resource "aws_launch_template" "orchestrator" {
  name_prefix   = "${local.prefix}-orch-"
  image_id      = var.ami_id
  instance_type = var.orchestrator_instance_type
  user_data     = base64encode(local.orchestrator_user_data)
  iam_instance_profile {
    arn = aws_iam_instance_profile.orchestrator.arn
  }
  network_interfaces {
    # Orchestrators are never addressable from outside the VPC: the edges are their only way in.
    associate_public_ip_address = false
    security_groups             = [aws_security_group.orchestrator.id]
  }
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size = var.orchestrator_disk_gb
      volume_type = "gp3"
      encrypted   = true
      kms_key_id  = aws_kms_key.cluster.arn
    }
  }
  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${local.prefix}-orchestrator", "cove:role" = "orchestrator" })
  }
}

resource "aws_autoscaling_group" "orchestrator" {
  # A fixed name: the enroller's rule and permissions name the group before it exists, so it can exist first.
  name                = local.orchestrator_asg_name
  min_size            = var.orchestrator_count.min
  max_size            = var.orchestrator_count.max
  desired_capacity    = var.orchestrator_count.desired
  vpc_zone_identifier = local.private_subnet_ids
  health_check_type   = "EC2"
  # Scale-in is the autoscaler's decision (it drains first): AWS never picks a node with sandboxes on its own.
  protect_from_scale_in = true
  launch_template {
    id      = aws_launch_template.orchestrator.id
    version = aws_launch_template.orchestrator.latest_version
  }
  # A new node waits in Pending:Wait until the enroller has issued its credential.
  initial_lifecycle_hook {
    name                 = "cove-enroll"
    lifecycle_transition = "autoscaling:EC2_INSTANCE_LAUNCHING"
    default_result       = "ABANDON"
    heartbeat_timeout    = 300
  }
  initial_lifecycle_hook {
    name                 = "cove-revoke"
    lifecycle_transition = "autoscaling:EC2_INSTANCE_TERMINATING"
    default_result       = "CONTINUE"
    heartbeat_timeout    = 120
  }
  # The first nodes' launch events must find the enroller listening, or they wait out the hook and are replaced.
  depends_on = [aws_cloudwatch_event_target.enroller, aws_lambda_permission.events]
  dynamic "tag" {
    for_each = local.tags
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}
