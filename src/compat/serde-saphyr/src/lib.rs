//! serde-saphyr 1.x under the 0.0.16 name mistralrs-core asks for (see this package's manifest).

pub use serde_saphyr_1::*;
