"""openstack-ha-lab's helper package: the node lab and what Ansible cannot do."""

__version__ = "0.1.0"
