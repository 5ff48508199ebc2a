# Optional data stores, in the private subnets, reachable only from the groups that use them.

resource "aws_elasticache_subnet_group" "edge" {
  count      = var.create_redis ? 1 : 0
  name       = "${local.prefix}-edge"
  subnet_ids = local.private_subnet_ids
}

resource "aws_elasticache_replication_group" "edge" {
  count                      = var.create_redis ? 1 : 0
  replication_group_id       = "${local.prefix}-edge"
  description                = "Cove ${var.name}: the edges' shared sandbox catalog"
  engine                     = "redis"
  engine_version             = "7.1"
  node_type                  = var.redis_node_type
  num_cache_clusters         = 2
  automatic_failover_enabled = true
  multi_az_enabled           = true
  port                       = local.ports.redis
  subnet_group_name          = aws_elasticache_subnet_group.edge[0].name
  security_group_ids         = [aws_security_group.redis[0].id]
  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.cluster.arn
  transit_encryption_enabled = true
  auth_token                 = random_password.secret["redis_auth"].result
  snapshot_retention_limit   = 7
  tags                       = local.tags
}

resource "aws_db_subnet_group" "control_plane" {
  count      = var.create_postgres ? 1 : 0
  name       = "${local.prefix}-control-plane"
  subnet_ids = local.private_subnet_ids
  tags       = local.tags
}

resource "aws_db_instance" "control_plane" {
  count                         = var.create_postgres ? 1 : 0
  identifier_prefix             = "${local.prefix}-cp-"
  engine                        = "postgres"
  engine_version                = "16"
  instance_class                = var.postgres_instance_class
  allocated_storage             = 50
  max_allocated_storage         = 500
  storage_encrypted             = true
  kms_key_id                    = aws_kms_key.cluster.arn
  db_name                       = "cove"
  username                      = "cove"
  manage_master_user_password   = true
  master_user_secret_kms_key_id = aws_kms_key.cluster.arn
  db_subnet_group_name          = aws_db_subnet_group.control_plane[0].name
  vpc_security_group_ids        = [aws_security_group.postgres[0].id]
  publicly_accessible           = false
  multi_az                      = true
  backup_retention_period       = 14
  deletion_protection           = true
  skip_final_snapshot           = false
  final_snapshot_identifier     = "${local.prefix}-control-plane-final"
  tags                          = local.tags
}
