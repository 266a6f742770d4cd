"""The namespaces lab: a fabric's hosts, router and VMs on one machine."""
