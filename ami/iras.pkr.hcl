# The iras AMI: Ubuntu LTS with the release binaries, the model pack, the ONNX Runtime
# library and the systemd units baked in, so an instance fetches nothing at boot. One image
# serves both roles: the web instance enables iras-web-tier + iras-scaler, an app-tier
# instance enables iras-app-tier (each from its cloud-init user data).
#
# scripts/deploy-aws stages the files and runs:
#   packer build -var region=REGION -var dist_dir=DIR -var golden_photo=PHOTO \
#     [-var vpc_id=VPC -var subnet_id=SUBNET] ami/iras.pkr.hcl
# DIR holds bin/{web-tier,app-tier,listener,scaler}, model/{model.onnx,pack.toml,labels.txt}
# and lib/libonnxruntime.so; PHOTO is scripts/fetch-model's golden coffee.png. Credentials
# come from the caller's environment or profile.
#
# The build, in order: install.sh (binaries, model, runtime, units, the iras user);
# smoke-test.sh (a real classification of the golden photo with them, which must give
# golden_label); install-observability.sh (rsyslog + the Amazon CloudWatch agent for the
# logs, a check that the SSM agent snap is installed and enabled); generalise.sh (no
# machine id, no authorized_keys, no SSH host keys, cloud-init clean).
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

variable "golden_photo" {
  type        = string
  description = "A photo the image must classify as golden_label (scripts/fetch-model's golden/coffee.png)."
}

variable "golden_label" {
  type        = string
  default     = "espresso"
  description = "The top-1 label the baked model pack (efficientnet-lite0) gives golden_photo."
}

variable "vpc_id" {
  type        = string
  default     = ""
  description = "VPC for the builder instance; empty: the region's default VPC."
}

variable "subnet_id" {
  type        = string
  default     = ""
  description = "Subnet for the builder instance (in vpc_id); empty: a default subnet."
}

variable "associate_public_ip_address" {
  type        = bool
  default     = true
  description = "With subnet_id: give the builder a public address (Packer connects over SSH from here)."
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

  vpc_id    = var.vpc_id
  subnet_id = var.subnet_id
  # Only meaningful with an explicit subnet (a default subnet assigns one anyway).
  associate_public_ip_address = var.subnet_id == "" ? null : var.associate_public_ip_address

  # Named and tagged so that leftovers of an interrupted build can be found: the temporary
  # key pair is iras-<stack>-packer-<time>; the Amazon plugin tags it and the temporary
  # security group (packer_<uuid>, "Temporary group for Packer") with run_tags.
  temporary_key_pair_name = "${var.ami_name_prefix}-${var.stack_name}-packer-${local.timestamp}"

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
    "iras:role"  = "packer-builder"
  }
  run_volume_tags = {
    "iras:stack" = var.stack_name
    "iras:role"  = "packer-builder"
  }
}

build {
  sources = ["source.amazon-ebs.iras"]

  provisioner "shell" {
    inline = ["mkdir -p /tmp/iras-dist /tmp/iras-ami /tmp/iras-logs /tmp/iras-golden"]
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

  provisioner "file" {
    source      = "${path.root}/logs/"
    destination = "/tmp/iras-logs"
  }

  provisioner "file" {
    source      = var.golden_photo
    destination = "/tmp/iras-golden/${basename(var.golden_photo)}"
  }

  provisioner "shell" {
    script          = "${path.root}/install.sh"
    execute_command = "sudo -E bash '{{ .Path }}' /tmp/iras-dist /tmp/iras-ami"
  }

  # The image must classify: the installed binary, ONNX Runtime and model, on the golden
  # photo, as the iras user. A wrong label (or none) fails the build.
  provisioner "shell" {
    script          = "${path.root}/smoke-test.sh"
    execute_command = "sudo -E bash '{{ .Path }}' '/tmp/iras-golden/${basename(var.golden_photo)}' '${var.golden_label}'"
  }

  provisioner "shell" {
    script          = "${path.root}/install-observability.sh"
    execute_command = "sudo -E bash '{{ .Path }}' /tmp/iras-logs"
  }

  # Last: no machine id, keys or cloud-init state of the builder in the image.
  provisioner "shell" {
    inline = ["sudo rm -rf /tmp/iras-dist /tmp/iras-ami /tmp/iras-logs /tmp/iras-golden"]
  }

  provisioner "shell" {
    script          = "${path.root}/generalise.sh"
    execute_command = "sudo -E bash '{{ .Path }}'"
  }
}
