"""os-ken shims and the synod-controller launcher: the only code that imports os_ken."""
