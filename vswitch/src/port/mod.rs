//! Ports (work in progress).

/// Index of a port in the switch's port table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u16);
