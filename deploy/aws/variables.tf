# Every input of the module. Required ones (no default) are documented in docs/byoc-aws.md; the deploy-check
# test (packages/deploy-check) fails when one lacks a type, a description, or its line in that guide.

variable "name" {
  type        = string
  description = "Cluster name: prefixes every resource, names the bucket and the secrets. 3-20 lowercase letters, digits and dashes (load balancer names are limited to 32 characters)."
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,19}$", var.name))
    error_message = "name must be 3-20 characters: lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "ami_id" {
  type        = string
  description = "The Cove node machine image built by deploy/image (packer build); edges and orchestrators boot from it."
}

variable "sandbox_domain" {
  type        = string
  description = "DNS name sandboxes are reached under (E2B_DOMAIN): <port>-<sandbox id>.<domain> must resolve to the load balancer. Must not be an E2B domain."
}

variable "sandbox_certificate_arn" {
  type        = string
  description = "ACM certificate for *.<sandbox_domain> (and <sandbox_domain>): the load balancer terminates the SDK's TLS with it."
}

variable "control_plane_url" {
  type        = string
  description = "Base URL of the Cove control plane this cluster registers with (E2B_API_URL): the vendor's, or one the customer runs."
}

variable "control_plane_cidrs" {
  type        = list(string)
  description = "Addresses the control plane calls the cluster from (the control link on the edge API port, mutual TLS). Never 0.0.0.0/0 unless the control plane has no fixed addresses."
}

variable "client_cidrs" {
  type        = list(string)
  description = "Addresses SDK clients reach sandboxes from (HTTPS 443 and the public log/metric port). The VPC's own range for an internal load balancer."
}

variable "team_api_key_secret_arn" {
  type        = string
  default     = null
  description = "Optional: Secrets Manager secret holding the team API key the control plane issued for this cluster; makes the E2B_API_KEY output a value instead of null."
}

variable "control_link_mutual_tls" {
  type        = bool
  default     = true
  description = "Require the cluster CA's client certificate on the edge API port (control plane and orchestrators have one). The SDK's template COPY uploads go to that port too: with true, only clients holding a cluster client certificate can build templates with COPY; false admits client_cidrs to it with TLS and the signed upload tokens only."
}

variable "create_vpc" {
  type        = bool
  default     = true
  description = "Create a VPC (private subnets for the nodes, public ones for NAT and an internet-facing load balancer); false = use vpc_id and the subnet ids given."
}

variable "vpc_cidr" {
  type        = string
  default     = "10.40.0.0/16"
  description = "CIDR of the VPC the module creates (create_vpc = true). Must not overlap the sandbox subnets the nodes use (10.231.0.0/16 by default)."
}

variable "availability_zones" {
  type        = list(string)
  default     = []
  description = "Availability zones of the created VPC; empty = the region's first two."
}

variable "vpc_id" {
  type        = string
  default     = null
  description = "Existing VPC (create_vpc = false)."
}

variable "private_subnet_ids" {
  type        = list(string)
  default     = []
  description = "Existing private subnets for edges, orchestrators, Redis and Postgres (create_vpc = false); they reach the internet through the customer's NAT."
}

variable "public_subnet_ids" {
  type        = list(string)
  default     = []
  description = "Existing public subnets for an internet-facing load balancer (create_vpc = false, load_balancer_internal = false)."
}

variable "load_balancer_internal" {
  type        = bool
  default     = false
  description = "Put the SDK-facing load balancer in the private subnets only (clients inside the VPC or a peered network)."
}

variable "edge_instance_type" {
  type        = string
  default     = "c7i.large"
  description = "Instance type of the edges (proxy, cluster API, registry)."
}

variable "edge_count" {
  type = object({
    min     = number
    max     = number
    desired = number
  })
  default     = { min = 2, max = 4, desired = 2 }
  description = "Size of the edge Auto Scaling group. More than one edge needs create_redis (edges share their catalog there)."
  validation {
    condition     = var.edge_count.min >= 1 && var.edge_count.min <= var.edge_count.desired && var.edge_count.desired <= var.edge_count.max
    error_message = "edge_count needs 1 <= min <= desired <= max."
  }
}

variable "orchestrator_instance_type" {
  type        = string
  default     = "m7i.2xlarge"
  description = "Instance type of the orchestrator nodes (they run the sandboxes: size for vCPU and memory)."
}

variable "orchestrator_count" {
  type = object({
    min     = number
    max     = number
    desired = number
  })
  default     = { min = 1, max = 10, desired = 2 }
  description = "Size of the orchestrator Auto Scaling group (the autoscaler moves desired between min and max)."
  validation {
    condition     = var.orchestrator_count.min >= 0 && var.orchestrator_count.min <= var.orchestrator_count.desired && var.orchestrator_count.desired <= var.orchestrator_count.max && var.orchestrator_count.max >= 1
    error_message = "orchestrator_count needs 0 <= min <= desired <= max and max >= 1."
  }
}

variable "orchestrator_disk_gb" {
  type        = number
  default     = 200
  description = "Root volume of an orchestrator (gp3): templates, sandbox disks, paused sandboxes kept in place."
}

variable "orchestrator_warm_pool" {
  type        = string
  default     = "base=2,code-interpreter-v1=1"
  description = "Warm sandboxes each orchestrator keeps per template (COVE_WARM_POOL)."
}

variable "create_redis" {
  type        = bool
  default     = true
  description = "Create an ElastiCache Redis (TLS, auth token) the edges share their catalog in; required with more than one edge."
}

variable "redis_node_type" {
  type        = string
  default     = "cache.t4g.small"
  description = "ElastiCache node type (create_redis)."
}

variable "create_postgres" {
  type        = bool
  default     = false
  description = "Create an RDS PostgreSQL for a control plane the customer runs in this account (its COVE_DB_URL is an output); the vendor's control plane needs none."
}

variable "postgres_instance_class" {
  type        = string
  default     = "db.t4g.medium"
  description = "RDS instance class (create_postgres)."
}

variable "otlp_endpoint" {
  type        = string
  default     = null
  description = "Optional OTLP/HTTP receiver of the customer for the nodes' and edges' logs and metrics (COVE_OTLP_ENDPOINT)."
}

variable "oidc_issuer" {
  type        = string
  default     = null
  description = "Optional issuer URL of your OpenID Connect provider: the edges then accept only its tokens on the cluster API and control link (COVE_OIDC_ISSUER); set with oidc_audience."
  validation {
    condition     = var.oidc_issuer == null || can(regex("^https://[^\\s]+$", var.oidc_issuer))
    error_message = "oidc_issuer must be an https:// URL."
  }
}

variable "oidc_audience" {
  type        = string
  default     = null
  description = "The audience (API identifier) your provider puts in the cluster's access tokens (COVE_OIDC_AUDIENCE); set with oidc_issuer."
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Tags added to every resource."
}

variable "autoscaler_principal_arn" {
  type        = string
  default     = null
  description = "Optional: the IAM principal (role ARN) that runs `cove autoscale run --provider aws-asg` next to the control plane; creates a role it may assume to scale the orchestrator group (outputs autoscaler_role_arn). Requires autoscaler_external_id."
  validation {
    condition     = var.autoscaler_principal_arn == null || can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:(role|user)/", var.autoscaler_principal_arn))
    error_message = "autoscaler_principal_arn must be an IAM role or user ARN (arn:aws:iam::<account>:role/<name>)."
  }
}

variable "autoscaler_external_id" {
  type        = string
  default     = null
  sensitive   = true
  description = "The external id the autoscaler's principal must present to assume the autoscaler role (agreed with whoever runs it; 16+ characters)."
  validation {
    condition     = var.autoscaler_external_id == null || can(regex("^[A-Za-z0-9+=,.@:/_-]{16,1224}$", var.autoscaler_external_id))
    error_message = "autoscaler_external_id must be 16 to 1224 characters of A-Z a-z 0-9 + = , . @ : / _ -."
  }
}
