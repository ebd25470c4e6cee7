//! The value types the typed-cache benchmarks store: the quickstart's `UserDetail`, and an
//! enum-carrying struct of about the same encoded size.

use serde::{Deserialize, Serialize};

/// The quickstart's type.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct UserDetail {
    pub name: String,
    pub age: u8,
}

/// An enum with a unit and a struct variant.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Sentiment {
    Positive,
    Negative,
    Mixed { score: u8 },
}

/// A struct carrying an enum.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Labeled {
    pub label: String,
    pub sentiment: Sentiment,
}
