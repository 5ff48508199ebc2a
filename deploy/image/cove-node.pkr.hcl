# The Cove node machine image: Debian 12 with Cove installed at /opt/cove, built and ready; edges and
# orchestrators both boot from it (cloud-init's user-data decides which one a machine becomes).
#   git archive --format=tar.gz -o /tmp/cove.tar.gz HEAD
#   packer plugins install github.com/hashicorp/amazon   (Packer >= 1.10; 1.6 from Debian has it built in)
#   packer build -var cove_source=/tmp/cove.tar.gz -var node_sha256=<sha256> deploy/image
# `packer validate` of this file is part of the deploy-check test.

variable "region" {
  type        = string
  default     = "us-east-1"
  description = "Region the image is built in (copy it to others with ami_regions)."
}

variable "ami_regions" {
  type        = list(string)
  default     = []
  description = "Further regions the finished image is copied to."
}

variable "instance_type" {
  type        = string
  default     = "c7i.xlarge"
  description = "Builder instance type (the build compiles native helpers and CRIU)."
}

variable "subnet_id" {
  type        = string
  default     = ""
  description = "Subnet of the builder instance; empty = the default VPC's."
}

variable "cove_source" {
  type        = string
  description = "Path of a tarball of the Cove repository to install (git archive --format=tar.gz HEAD)."
}

variable "node_version" {
  type        = string
  default     = "20.20.2"
  description = "Node.js release installed from nodejs.org (Cove runs on Node 20; Debian 12 ships 18)."
}

variable "node_sha256" {
  type        = string
  description = "SHA-256 of node-v<node_version>-linux-x64.tar.xz from nodejs.org's signed SHASUMS256.txt: the download is refused unless it matches."
}

source "amazon-ebs" "cove_node" {
  region        = var.region
  ami_regions   = var.ami_regions
  instance_type = var.instance_type
  subnet_id     = var.subnet_id
  ssh_username  = "admin"
  ami_name      = "cove-node-{{timestamp}}"
  ami_description = "Cove node (Debian 12): edge or orchestrator, chosen by user-data"
  encrypt_boot  = true

  source_ami_filter {
    filters = {
      name                = "debian-12-amd64-*"
      architecture        = "x86_64"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    # Debian's own AWS account: the image is only ever built on an official Debian AMI.
    owners      = ["136693071363"]
    most_recent = true
  }

  launch_block_device_mappings {
    device_name           = "/dev/xvda"
    volume_size           = 16
    volume_type           = "gp3"
    iops                  = 3000
    throughput            = 125
    delete_on_termination = true
  }

  tags = {
    Name       = "cove-node"
    "cove:role" = "node-image"
  }
}

build {
  sources = ["source.amazon-ebs.cove_node"]

  provisioner "file" {
    source      = var.cove_source
    destination = "/tmp/cove.tar.gz"
  }

  provisioner "file" {
    source      = "${path.root}/files/"
    destination = "/tmp/cove-files"
  }

  provisioner "shell" {
    execute_command = "sudo -E bash '{{ .Path }}'"
    environment_vars = [
      "NODE_VERSION=${var.node_version}",
      "NODE_SHA256=${var.node_sha256}",
    ]
    script = "${path.root}/install.sh"
  }
}
