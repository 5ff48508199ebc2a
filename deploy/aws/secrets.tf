# The cluster's secrets, generated here and kept in Secrets Manager (encrypted with the cluster key). Each
# role reads only the secret it needs: edges theirs, orchestrators theirs, the enroller the node-credential key.
# They are in the Terraform state too: keep the state encrypted and access-controlled (docs/byoc-aws.md).

resource "random_password" "secret" {
  for_each = toset(["cluster_token", "node_credential_key", "upload_secret", "artifact_key", "registry_password", "registry_http_secret", "redis_auth"])
  length   = 48
  special  = false
}

resource "aws_secretsmanager_secret" "edge" {
  name_prefix = "${local.prefix}/edge-"
  description = "Cove ${var.name}: what every edge needs (cluster token, node-credential key, upload and registry secrets, TLS)"
  kms_key_id  = aws_kms_key.cluster.arn
  tags        = local.tags
}

resource "aws_secretsmanager_secret_version" "edge" {
  secret_id = aws_secretsmanager_secret.edge.id
  secret_string = jsonencode({
    clusterToken       = random_password.secret["cluster_token"].result
    nodeCredentialKey  = random_password.secret["node_credential_key"].result
    uploadSecret       = random_password.secret["upload_secret"].result
    registryPassword   = random_password.secret["registry_password"].result
    registryHttpSecret = random_password.secret["registry_http_secret"].result
    redisUrl           = var.create_redis ? "rediss://:${random_password.secret["redis_auth"].result}@${aws_elasticache_replication_group.edge[0].primary_endpoint_address}:6379" : null
    tlsCert            = tls_locally_signed_cert.edge.cert_pem
    tlsKey             = tls_private_key.edge.private_key_pem
    tlsClientCa        = var.control_link_mutual_tls ? tls_self_signed_cert.ca.cert_pem : null
  })
}

# What cove-node-join reads (COVE_CLUSTER_SECRETS_ARN): never the node-credential key, never the cluster token.
resource "aws_secretsmanager_secret" "node" {
  name_prefix = "${local.prefix}/node-"
  description = "Cove ${var.name}: what every orchestrator shares (artifact key, registry password, control-link TLS)"
  kms_key_id  = aws_kms_key.cluster.arn
  tags        = local.tags
}

resource "aws_secretsmanager_secret_version" "node" {
  secret_id = aws_secretsmanager_secret.node.id
  secret_string = jsonencode({
    artifactKey      = random_password.secret["artifact_key"].result
    registryPassword = random_password.secret["registry_password"].result
    edgeCa           = tls_self_signed_cert.ca.cert_pem
    edgeClientCert   = tls_locally_signed_cert.node_client.cert_pem
    edgeClientKey    = tls_private_key.node_client.private_key_pem
  })
}

# The key each node's credential is derived from: the edges verify with it, the enroller issues with it.
resource "aws_secretsmanager_secret" "node_credential_key" {
  name_prefix = "${local.prefix}/node-credential-key-"
  description = "Cove ${var.name}: HMAC key of the per-node credentials (enroller only)"
  kms_key_id  = aws_kms_key.cluster.arn
  tags        = local.tags
}

resource "aws_secretsmanager_secret_version" "node_credential_key" {
  secret_id     = aws_secretsmanager_secret.node_credential_key.id
  secret_string = random_password.secret["node_credential_key"].result
}

data "aws_secretsmanager_secret_version" "team_api_key" {
  count     = var.team_api_key_secret_arn == null ? 0 : 1
  secret_id = var.team_api_key_secret_arn
}
