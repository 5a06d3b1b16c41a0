use actix_conditional::cache_control;

// An extension that is a typed option, an argument that is neither a token nor a
// quoted-string, and a field name that is not a token: each named at its place.
#[cache_control(max_age = 60, extensions = ["max-age=5", "x=a b"], no_cache = "Set Cookie")]
async fn handler() -> &'static str {
    "x"
}

fn main() {}
