//! The signature engine; see the next commit.
