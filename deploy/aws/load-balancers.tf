# Two Network Load Balancers in front of the edges:
#   front   — what SDK clients and the control plane reach: 443 (TLS with the customer's ACM certificate) to the
#             edges' traffic port, 3003 (TLS, ACM) to their public port, 3001 passed through to the API port
#             (the edge ends the control link's mutual TLS itself). Internal when load_balancer_internal.
#   cluster — always internal: orchestrators' heartbeats (3001, passed through) and registry pulls (5000).

resource "aws_lb" "front" {
  name               = "${local.prefix}-front"
  load_balancer_type = "network"
  internal           = var.load_balancer_internal
  subnets            = var.load_balancer_internal ? local.private_subnet_ids : local.public_subnet_ids
  security_groups    = [aws_security_group.front_lb.id]
  tags               = local.tags
}

resource "aws_lb" "cluster" {
  name               = "${local.prefix}-cluster"
  load_balancer_type = "network"
  internal           = true
  subnets            = local.private_subnet_ids
  security_groups    = [aws_security_group.cluster_lb.id]
  tags               = local.tags
}

locals {
  front_targets = {
    traffic = { port = local.ports.edge_traffic, listen = 443, tls = true }
    public  = { port = local.ports.edge_public, listen = local.ports.edge_public, tls = true }
    api     = { port = local.ports.edge_api, listen = local.ports.edge_api, tls = false }
  }
  cluster_targets = {
    api      = { port = local.ports.edge_api }
    registry = { port = local.ports.registry }
  }
}

resource "aws_lb_target_group" "front" {
  for_each    = local.front_targets
  port        = each.value.port
  protocol    = "TCP"
  vpc_id      = local.vpc_id
  target_type = "instance"
  # Long-lived sandbox connections (PTY, streams) get time to finish when an edge leaves.
  deregistration_delay = 300
  health_check {
    protocol = "TCP"
    port     = tostring(each.value.port)
  }
  tags = local.tags
}

resource "aws_lb_listener" "front" {
  for_each          = local.front_targets
  load_balancer_arn = aws_lb.front.arn
  port              = each.value.listen
  protocol          = each.value.tls ? "TLS" : "TCP"
  certificate_arn   = each.value.tls ? var.sandbox_certificate_arn : null
  ssl_policy        = each.value.tls ? "ELBSecurityPolicy-TLS13-1-2-2021-06" : null
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.front[each.key].arn
  }
}

resource "aws_lb_target_group" "cluster" {
  for_each             = local.cluster_targets
  port                 = each.value.port
  protocol             = "TCP"
  vpc_id               = local.vpc_id
  target_type          = "instance"
  deregistration_delay = 60
  health_check {
    protocol = "TCP"
    port     = tostring(each.value.port)
  }
  tags = local.tags
}

resource "aws_lb_listener" "cluster" {
  for_each          = local.cluster_targets
  load_balancer_arn = aws_lb.cluster.arn
  port              = each.value.port
  protocol          = "TCP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.cluster[each.key].arn
  }
}
