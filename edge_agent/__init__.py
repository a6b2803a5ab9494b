"""Edge agent: runs services as VMs attached to the site switch and reports their state."""
