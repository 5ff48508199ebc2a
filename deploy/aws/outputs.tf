# What the SDK, the CLI and the control plane need. The four E2B_* outputs are the client settings
# (`export E2B_API_URL=$(terraform output -raw E2B_API_URL)` …); the rest registers the cluster.

output "E2B_API_URL" {
  description = "The control plane the SDK and CLI talk to."
  value       = var.control_plane_url
}

output "E2B_SANDBOX_URL" {
  description = "Where the SDK sends sandbox traffic: the front load balancer's HTTPS listener."
  value       = "https://${aws_lb.front.dns_name}"
}

output "E2B_DOMAIN" {
  description = "The sandbox domain; point *.<domain> (a CNAME or alias) at the front load balancer."
  value       = var.sandbox_domain
}

output "E2B_API_KEY" {
  description = "The team API key the control plane issued for this cluster (from team_api_key_secret_arn); null until it is set."
  value       = var.team_api_key_secret_arn == null ? null : data.aws_secretsmanager_secret_version.team_api_key[0].secret_string
  sensitive   = true
}

output "cluster_endpoint" {
  description = "The edge API (control link) the control plane registers: POST /admin/clusters {endpoint}."
  value       = "https://${aws_lb.front.dns_name}:${local.ports.edge_api}"
}

output "cluster_public_url" {
  description = "The edges' public port (logs, metrics, build status) the control plane redirects SDK clients to: POST /admin/clusters {publicUrl}."
  value       = "https://${aws_lb.front.dns_name}:${local.ports.edge_public}"
}

output "cluster_token" {
  description = "The cluster token the control plane calls the cluster with: POST /admin/clusters {token}."
  value       = random_password.secret["cluster_token"].result
  sensitive   = true
}

output "control_link_ca_pem" {
  description = "CA of the edge's certificate: the control plane's COVE_CONTROL_LINK_CA."
  value       = tls_self_signed_cert.ca.cert_pem
}

output "control_link_client_cert_pem" {
  description = "The control plane's client certificate for the control link (COVE_CONTROL_LINK_CLIENT_CERT)."
  value       = tls_locally_signed_cert.control_plane_client.cert_pem
}

output "control_link_client_key_pem" {
  description = "Its key (COVE_CONTROL_LINK_CLIENT_KEY)."
  value       = tls_private_key.control_plane_client.private_key_pem
  sensitive   = true
}

output "front_load_balancer_dns" {
  description = "DNS name of the SDK-facing load balancer (alias *.<sandbox_domain> to it)."
  value       = aws_lb.front.dns_name
}

output "cluster_bucket" {
  description = "The cluster storage bucket."
  value       = aws_s3_bucket.cluster.bucket
}

output "orchestrator_asg_name" {
  description = "The orchestrator Auto Scaling group (the autoscaler's AWS provider scales it)."
  value       = aws_autoscaling_group.orchestrator.name
}

output "control_plane_database" {
  description = "RDS endpoint and the Secrets Manager secret of its master password, for a control plane run in this account (create_postgres); attach control_plane_security_group_id to it."
  value       = var.create_postgres ? { endpoint = aws_db_instance.control_plane[0].endpoint, password_secret_arn = aws_db_instance.control_plane[0].master_user_secret[0].secret_arn } : null
}

output "control_plane_security_group_id" {
  description = "Security group a control plane run in this account carries to reach the database (create_postgres)."
  value       = var.create_postgres ? aws_security_group.control_plane[0].id : null
}

output "autoscaler_role_arn" {
  description = "The role `cove autoscale run --provider aws-asg` assumes to scale the orchestrator group (with autoscaler_external_id); null unless autoscaler_principal_arn is set."
  value       = local.autoscaler_enabled ? aws_iam_role.autoscaler[0].arn : null
}
