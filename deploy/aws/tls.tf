# TLS of the control link (the edge API port): a CA of the cluster's own signs the edges' server certificate and
# two client certificates — the control plane's and the one orchestrators share (each node is still told apart by
# its own node credential). The edge requires one of them (COVE_EDGE_TLS_CLIENT_CA): nothing without it gets a
# request to the cluster API, whatever token it holds.

resource "tls_private_key" "ca" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_self_signed_cert" "ca" {
  private_key_pem       = tls_private_key.ca.private_key_pem
  is_ca_certificate     = true
  validity_period_hours = 24 * 365 * 5
  allowed_uses          = ["cert_signing", "crl_signing"]
  subject {
    common_name  = "Cove ${var.name} cluster CA"
    organization = "Cove"
  }
}

resource "tls_private_key" "edge" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "edge" {
  private_key_pem = tls_private_key.edge.private_key_pem
  # Both load balancers' names: the control plane dials the front one, the nodes the internal one.
  dns_names = [aws_lb.front.dns_name, aws_lb.cluster.dns_name]
  subject {
    common_name = "${var.name} edge"
  }
}

resource "tls_locally_signed_cert" "edge" {
  cert_request_pem      = tls_cert_request.edge.cert_request_pem
  ca_private_key_pem    = tls_private_key.ca.private_key_pem
  ca_cert_pem           = tls_self_signed_cert.ca.cert_pem
  validity_period_hours = 24 * 365
  early_renewal_hours   = 24 * 30
  allowed_uses          = ["digital_signature", "key_encipherment", "server_auth"]
}

resource "tls_private_key" "control_plane_client" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "control_plane_client" {
  private_key_pem = tls_private_key.control_plane_client.private_key_pem
  subject {
    common_name = "${var.name} control plane"
  }
}

resource "tls_locally_signed_cert" "control_plane_client" {
  cert_request_pem      = tls_cert_request.control_plane_client.cert_request_pem
  ca_private_key_pem    = tls_private_key.ca.private_key_pem
  ca_cert_pem           = tls_self_signed_cert.ca.cert_pem
  validity_period_hours = 24 * 365
  early_renewal_hours   = 24 * 30
  allowed_uses          = ["digital_signature", "client_auth"]
}

resource "tls_private_key" "node_client" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "node_client" {
  private_key_pem = tls_private_key.node_client.private_key_pem
  subject {
    common_name = "${var.name} orchestrator"
  }
}

resource "tls_locally_signed_cert" "node_client" {
  cert_request_pem      = tls_cert_request.node_client.cert_request_pem
  ca_private_key_pem    = tls_private_key.ca.private_key_pem
  ca_cert_pem           = tls_self_signed_cert.ca.cert_pem
  validity_period_hours = 24 * 365
  early_renewal_hours   = 24 * 30
  allowed_uses          = ["digital_signature", "client_auth"]
}
