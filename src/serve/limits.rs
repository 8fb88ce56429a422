//! Bounds on the request inputs that cost work per byte or per token, in one place.

/// A stop string at most (the engine searches every stop string after every token).
pub const MAX_STOP_BYTES: usize = 256;
/// Stop strings per request at most.
pub const MAX_STOP_STRINGS: usize = 16;
/// A request body at most (set on the router; the checks below agree with it).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Template instructions per chat render at most (minijinja's fuel): ample for any chat that fits
/// in a body, and a bound on a model's template that loops for long.
pub const TEMPLATE_FUEL: u64 = 5_000_000;
/// A rendered chat prompt at most, in bytes (a template that multiplies its input is refused).
pub const MAX_RENDERED_BYTES: usize = 4 * MAX_BODY_BYTES;
