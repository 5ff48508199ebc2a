# Who may talk to whom. Every rule carries a description saying why it exists (the deploy-check test refuses a
# rule without one). Orchestrators admit nothing but the edges: no CIDR rule, no public address, ever.

locals {
  ports = {
    edge_api          = 3001 # cluster API and control link (heartbeats, the control plane's calls): mutual TLS
    edge_traffic      = 3002 # sandbox traffic the SDK sends (the load balancer terminates TLS on 443)
    edge_public       = 3003 # sandbox logs, metrics and build status for SDK clients the control plane redirected
    registry          = 5000 # the cluster's OCI registry (TLS, basic auth): template builds pull through it
    orchestrator_rpc  = 5008 # node RPC (Connect over h2c): the edge's calls, node token required
    orchestrator_prox = 5007 # node proxy: sandbox traffic from the edge, node token required
    redis             = 6379
    postgres          = 5432
  }
}

resource "aws_security_group" "front_lb" {
  name        = "${local.prefix}-front-lb"
  description = "Cove SDK-facing load balancer"
  vpc_id      = local.vpc_id
  tags        = local.tags
}

resource "aws_security_group" "cluster_lb" {
  name        = "${local.prefix}-cluster-lb"
  description = "Cove internal load balancer: nodes to edges and registry"
  vpc_id      = local.vpc_id
  tags        = local.tags
}

resource "aws_security_group" "edge" {
  name        = "${local.prefix}-edge"
  description = "Cove edges"
  vpc_id      = local.vpc_id
  tags        = local.tags
}

resource "aws_security_group" "orchestrator" {
  name        = "${local.prefix}-orchestrator"
  description = "Cove orchestrator nodes: reachable from edges only"
  vpc_id      = local.vpc_id
  tags        = local.tags
}

resource "aws_security_group" "redis" {
  count       = var.create_redis ? 1 : 0
  name        = "${local.prefix}-redis"
  description = "Cove edge catalog (ElastiCache)"
  vpc_id      = local.vpc_id
  tags        = local.tags
}

resource "aws_security_group" "postgres" {
  count       = var.create_postgres ? 1 : 0
  name        = "${local.prefix}-postgres"
  description = "Cove control plane database (RDS)"
  vpc_id      = local.vpc_id
  tags        = local.tags
}

# Attach this group to a control plane run in this account: it is the only way into Postgres.
resource "aws_security_group" "control_plane" {
  count       = var.create_postgres ? 1 : 0
  name        = "${local.prefix}-control-plane"
  description = "A Cove control plane run in this account (client of the RDS database)"
  vpc_id      = local.vpc_id
  tags        = local.tags
}

# --- the SDK-facing load balancer ---

resource "aws_vpc_security_group_ingress_rule" "front_lb_https" {
  for_each          = toset(var.client_cidrs)
  security_group_id = aws_security_group.front_lb.id
  description       = "SDK clients reach sandboxes over HTTPS (E2B_SANDBOX_URL, <port>-<id>.<domain>)"
  cidr_ipv4         = each.value
  from_port         = 443
  to_port           = 443
  ip_protocol       = "tcp"
}

resource "aws_vpc_security_group_ingress_rule" "front_lb_public" {
  for_each          = toset(var.client_cidrs)
  security_group_id = aws_security_group.front_lb.id
  description       = "SDK clients fetch sandbox logs, metrics and build status the control plane redirected them to"
  cidr_ipv4         = each.value
  from_port         = local.ports.edge_public
  to_port           = local.ports.edge_public
  ip_protocol       = "tcp"
}

resource "aws_vpc_security_group_ingress_rule" "front_lb_control_link" {
  for_each          = toset(var.control_plane_cidrs)
  security_group_id = aws_security_group.front_lb.id
  description       = "The control plane calls the cluster API (control link; mutual TLS ends on the edge)"
  cidr_ipv4         = each.value
  from_port         = local.ports.edge_api
  to_port           = local.ports.edge_api
  ip_protocol       = "tcp"
}

resource "aws_vpc_security_group_ingress_rule" "front_lb_uploads" {
  for_each          = var.control_link_mutual_tls ? toset([]) : toset(var.client_cidrs)
  security_group_id = aws_security_group.front_lb.id
  description       = "Without mutual TLS, SDK clients upload template COPY files to the edge API port (signed, size-capped upload tokens)"
  cidr_ipv4         = each.value
  from_port         = local.ports.edge_api
  to_port           = local.ports.edge_api
  ip_protocol       = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "front_lb_to_edge" {
  security_group_id            = aws_security_group.front_lb.id
  description                  = "The load balancer forwards to the edges' API, traffic and public ports"
  referenced_security_group_id = aws_security_group.edge.id
  from_port                    = local.ports.edge_api
  to_port                      = local.ports.edge_public
  ip_protocol                  = "tcp"
}

# --- the internal load balancer the nodes use ---

resource "aws_vpc_security_group_ingress_rule" "cluster_lb_edge_api" {
  security_group_id            = aws_security_group.cluster_lb.id
  description                  = "Orchestrators heartbeat to the edges (cluster API, mutual TLS)"
  referenced_security_group_id = aws_security_group.orchestrator.id
  from_port                    = local.ports.edge_api
  to_port                      = local.ports.edge_api
  ip_protocol                  = "tcp"
}

resource "aws_vpc_security_group_ingress_rule" "cluster_lb_registry" {
  security_group_id            = aws_security_group.cluster_lb.id
  description                  = "Orchestrators pull fromImage bases through the cluster registry during template builds"
  referenced_security_group_id = aws_security_group.orchestrator.id
  from_port                    = local.ports.registry
  to_port                      = local.ports.registry
  ip_protocol                  = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "cluster_lb_to_edge_api" {
  security_group_id            = aws_security_group.cluster_lb.id
  description                  = "The internal load balancer forwards heartbeats to the edges"
  referenced_security_group_id = aws_security_group.edge.id
  from_port                    = local.ports.edge_api
  to_port                      = local.ports.edge_api
  ip_protocol                  = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "cluster_lb_to_registry" {
  security_group_id            = aws_security_group.cluster_lb.id
  description                  = "The internal load balancer forwards registry requests to the edges"
  referenced_security_group_id = aws_security_group.edge.id
  from_port                    = local.ports.registry
  to_port                      = local.ports.registry
  ip_protocol                  = "tcp"
}

# --- edges ---

resource "aws_vpc_security_group_ingress_rule" "edge_from_front_lb" {
  security_group_id            = aws_security_group.edge.id
  description                  = "Only the SDK-facing load balancer reaches the edges' API, traffic and public ports"
  referenced_security_group_id = aws_security_group.front_lb.id
  from_port                    = local.ports.edge_api
  to_port                      = local.ports.edge_public
  ip_protocol                  = "tcp"
}

resource "aws_vpc_security_group_ingress_rule" "edge_api_from_cluster_lb" {
  security_group_id            = aws_security_group.edge.id
  description                  = "Orchestrators' heartbeats arrive through the internal load balancer"
  referenced_security_group_id = aws_security_group.cluster_lb.id
  from_port                    = local.ports.edge_api
  to_port                      = local.ports.edge_api
  ip_protocol                  = "tcp"
}

resource "aws_vpc_security_group_ingress_rule" "edge_registry_from_cluster_lb" {
  security_group_id            = aws_security_group.edge.id
  description                  = "Registry pulls from orchestrators arrive through the internal load balancer"
  referenced_security_group_id = aws_security_group.cluster_lb.id
  from_port                    = local.ports.registry
  to_port                      = local.ports.registry
  ip_protocol                  = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "edge_to_orchestrator" {
  security_group_id            = aws_security_group.edge.id
  description                  = "Edges call node RPC and forward sandbox traffic to the node proxy"
  referenced_security_group_id = aws_security_group.orchestrator.id
  from_port                    = local.ports.orchestrator_prox
  to_port                      = local.ports.orchestrator_rpc
  ip_protocol                  = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "edge_to_redis" {
  count                        = var.create_redis ? 1 : 0
  security_group_id            = aws_security_group.edge.id
  description                  = "Edges share their sandbox catalog in Redis"
  referenced_security_group_id = aws_security_group.redis[0].id
  from_port                    = local.ports.redis
  to_port                      = local.ports.redis
  ip_protocol                  = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "edge_https" {
  security_group_id = aws_security_group.edge.id
  description       = "Edges reach S3, Secrets Manager and the control plane (auto-resume) over HTTPS"
  cidr_ipv4         = "0.0.0.0/0"
  from_port         = 443
  to_port           = 443
  ip_protocol       = "tcp"
}

# --- orchestrators: in from edges only ---

resource "aws_vpc_security_group_ingress_rule" "orchestrator_from_edge" {
  security_group_id            = aws_security_group.orchestrator.id
  description                  = "Edges, and nothing else, call node RPC and the node proxy"
  referenced_security_group_id = aws_security_group.edge.id
  from_port                    = local.ports.orchestrator_prox
  to_port                      = local.ports.orchestrator_rpc
  ip_protocol                  = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "orchestrator_out" {
  security_group_id = aws_security_group.orchestrator.id
  description       = "Nodes reach the internal load balancer, AWS APIs and package mirrors; sandboxes' own egress is what the node's network policy allows (docs/network-policy.md)"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
}

# --- data stores ---

resource "aws_vpc_security_group_ingress_rule" "redis_from_edge" {
  count                        = var.create_redis ? 1 : 0
  security_group_id            = aws_security_group.redis[0].id
  description                  = "Only edges use the catalog"
  referenced_security_group_id = aws_security_group.edge.id
  from_port                    = local.ports.redis
  to_port                      = local.ports.redis
  ip_protocol                  = "tcp"
}

resource "aws_vpc_security_group_ingress_rule" "postgres_from_control_plane" {
  count                        = var.create_postgres ? 1 : 0
  security_group_id            = aws_security_group.postgres[0].id
  description                  = "Only a control plane carrying the control-plane group reaches its database"
  referenced_security_group_id = aws_security_group.control_plane[0].id
  from_port                    = local.ports.postgres
  to_port                      = local.ports.postgres
  ip_protocol                  = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "control_plane_to_postgres" {
  count                        = var.create_postgres ? 1 : 0
  security_group_id            = aws_security_group.control_plane[0].id
  description                  = "The control plane reaches its database"
  referenced_security_group_id = aws_security_group.postgres[0].id
  from_port                    = local.ports.postgres
  to_port                      = local.ports.postgres
  ip_protocol                  = "tcp"
}
