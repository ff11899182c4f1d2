# The iras AMI: Ubuntu LTS with the release binaries, the model pack, the ONNX Runtime
# library and the systemd units baked in, so an instance fetches nothing at boot. One image
# serves both roles: the web instance enables iras-web-tier + iras-scaler, an app-tier
# instance enables iras-app-tier (each from its cloud-init user data).
#
# scripts/deploy-aws stages the files and runs:
#   packer build -var region=REGION -var dist_dir=DIR ami/iras.pkr.hcl
# DIR holds bin/{web-tier,app-tier,listener,scaler}, model/{model.onnx,pack.toml,labels.txt}
# and lib/libonnxruntime.so. Credentials come from the caller's environment or profile.
#
# Written for Packer's built-in amazon-ebs builder (Debian's packer 1.6.6 validates it);
# on Packer >= 1.7 install the Amazon plugin first (packer plugins install
# github.com/hashicorp/amazon).

variable "region" {
  type        = string
  description = "AWS region to build the AMI in (the stack's region)."
}

variable "dist_dir" {
  type        = string
  description = "Local directory with bin/, model/ and lib/ to install (see above)."
}

variable "instance_type" {
  type        = string
  default     = "t3.small"
  description = "Builder instance type (x86_64, matching the release binaries)."
}

variable "ami_name_prefix" {
  type    = string
  default = "iras"
}

variable "stack_name" {
  type        = string
  default     = "iras"
  description = "Tagged on the AMI and its snapshot (iras:stack) so teardown finds them."
}

variable "inputs_hash" {
  type        = string
  default     = ""
  description = "Digest of the AMI's inputs (tagged iras:inputs): deploy-aws reuses an AMI whose inputs match."
}

variable "ubuntu_owner" {
  type = string
  # Canonical's public image-publisher account, the owner of the official Ubuntu AMIs.
  default = "099720109477"
}

locals {
  timestamp = formatdate("YYYYMMDDhhmmss", timestamp())
}

source "amazon-ebs" "iras" {
  region          = var.region
  instance_type   = var.instance_type
  ssh_username    = "ubuntu"
  ami_name        = "${var.ami_name_prefix}-${var.stack_name}-${local.timestamp}"
  ami_description = "iras: web tier, listener, scaler, app tier, model pack and ONNX Runtime"

  source_ami_filter {
    filters = {
      name                = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    owners      = [var.ubuntu_owner]
    most_recent = true
  }

  launch_block_device_mappings {
    device_name           = "/dev/sda1"
    volume_size           = 8
    volume_type           = "gp3"
    throughput            = 125
    iops                  = 3000
    delete_on_termination = true
  }

  tags = {
    Name          = "${var.ami_name_prefix}-${var.stack_name}"
    "iras:stack"  = var.stack_name
    "iras:inputs" = var.inputs_hash
  }
  snapshot_tags = {
    "iras:stack" = var.stack_name
  }
  run_tags = {
    Name         = "${var.ami_name_prefix}-${var.stack_name}-packer-builder"
    "iras:stack" = var.stack_name
  }
}

build {
  sources = ["source.amazon-ebs.iras"]

  provisioner "shell" {
    inline = ["mkdir -p /tmp/iras-dist /tmp/iras-ami"]
  }

  # A trailing slash uploads the directory's contents.
  provisioner "file" {
    source      = "${var.dist_dir}/"
    destination = "/tmp/iras-dist"
  }

  provisioner "file" {
    source      = "${path.root}/systemd/"
    destination = "/tmp/iras-ami"
  }

  provisioner "shell" {
    script          = "${path.root}/install.sh"
    execute_command = "sudo -E bash '{{ .Path }}' /tmp/iras-dist /tmp/iras-ami"
  }
}
