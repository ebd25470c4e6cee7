//! The `#[memoize]` attribute of logcache. Use it through `logcache::memoize`.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::{ToTokens, quote};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{
    Error, Expr, FnArg, Ident, ItemFn, Lit, Pat, ReturnType, Token, Type, parse_macro_input,
};

/// Memoizes a function in a logcache [`Cache`]: the first call with some arguments runs the
/// body and stores the result; later calls with the same arguments, in this process or after
/// a restart (on a disk cache), return the stored result.
///
/// ```ignore
/// #[memoize(cache = CACHE, ttl = "1h")]
/// fn extract(text: &str) -> UserDetail { ... }
/// ```
///
/// The key is the function's path, a version, a hash of the function's body, the shape of
/// the result type, the generic instantiation (for generic functions), and the arguments
/// (which must implement `Serialize`; maps and hash sets among them are keyed by content,
/// whatever their iteration order). The result type must implement `logcache::Value`
/// (`Serialize + DeserializeOwned + Clone + Send + Sync + 'static`).
///
/// Options, all optional:
/// - `cache = EXPR`: anything implementing `logcache::memo::AsCache` (a `Cache`, a
///   `LazyLock<Cache>`, an `Arc<Cache>`); default `logcache::memo::default_cache()`.
/// - `ttl = "90s"` (units `ms`, `s`, `m`, `h`, `d`) or `ttl = EXPR` (a `Duration`).
/// - `key = EXPR`: what to key on instead of all the arguments, e.g. `key = (url,)` to
///   leave out a client handle.
/// - `version = N` (a constant): bump to invalidate old results by hand.
/// - `hash_body = false`: do not key on the body (editing it then keeps old results).
/// - `strict`: for functions returning `Result<T, E>` with `E: From<logcache::Error>`: cache
///   failures are returned instead of computing anyway.
/// - `no_lease`: a call that misses does not take the key's lease, so callers in other
///   processes or machines that miss at the same time compute too (by default they wait for
///   its result, where the backend has leases: Redis).
///
/// Works on `async fn`s, and on functions returning `Result` (only `Ok` is stored). Methods
/// taking `self` are not supported: use `logcache::memo::memoize` by hand.
///
/// [`Cache`]: https://docs.rs/logcache
#[proc_macro_attribute]
pub fn memoize(attr: TokenStream, item: TokenStream) -> TokenStream {
    let options = parse_macro_input!(attr as Options);
    let function = parse_macro_input!(item as ItemFn);
    expand(options, function)
        .unwrap_or_else(Error::into_compile_error)
        .into()
}

#[derive(Default)]
struct Options {
    cache: Option<Expr>,
    ttl: Option<Expr>,
    key: Option<Expr>,
    version: Option<Expr>,
    hash_body: Option<bool>,
    strict: bool,
    no_lease: bool,
}

enum OptionArg {
    Pair(Ident, Expr),
    Flag(Ident),
}

impl Parse for OptionArg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let name: Ident = input.parse()?;
        if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Ok(OptionArg::Pair(name, input.parse()?))
        } else {
            Ok(OptionArg::Flag(name))
        }
    }
}

impl Parse for Options {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut o = Options::default();
        for arg in Punctuated::<OptionArg, Token![,]>::parse_terminated(input)? {
            match arg {
                OptionArg::Pair(name, value) => match name.to_string().as_str() {
                    "cache" => o.cache = Some(value),
                    "ttl" => o.ttl = Some(value),
                    "key" => o.key = Some(value),
                    "version" => o.version = Some(value),
                    "hash_body" => o.hash_body = Some(bool_literal(&value)?),
                    other => {
                        return Err(Error::new(
                            name.span(),
                            format!("unknown memoize option `{other}`"),
                        ));
                    }
                },
                OptionArg::Flag(name) if name == "strict" => o.strict = true,
                OptionArg::Flag(name) if name == "no_lease" => o.no_lease = true,
                OptionArg::Flag(name) => {
                    return Err(Error::new(
                        name.span(),
                        format!("`{name}` needs a value: `{name} = ...`"),
                    ));
                }
            }
        }
        Ok(o)
    }
}

fn bool_literal(e: &Expr) -> syn::Result<bool> {
    match e {
        Expr::Lit(l) => match &l.lit {
            Lit::Bool(b) => Ok(b.value),
            _ => Err(Error::new_spanned(e, "expected `true` or `false`")),
        },
        _ => Err(Error::new_spanned(e, "expected `true` or `false`")),
    }
}

/// Milliseconds of a duration literal such as `"90s"`, `"1h"` or `"250ms"`.
fn parse_duration_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// A stable 64-bit FNV-1a hash.
fn fnv1a(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn returns_result(ret: &ReturnType) -> bool {
    match ret {
        ReturnType::Type(_, ty) => match &**ty {
            Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
            _ => false,
        },
        ReturnType::Default => false,
    }
}

fn expand(options: Options, function: ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let name = sig.ident.to_string();
    let mut arg_names = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                return Err(Error::new_spanned(
                    r,
                    "#[memoize] does not support methods; call logcache::memo::memoize inside instead",
                ));
            }
            FnArg::Typed(t) => match &*t.pat {
                Pat::Ident(ident) => arg_names.push(ident.ident.clone()),
                _ if options.key.is_some() => {}
                other => {
                    return Err(Error::new_spanned(
                        other,
                        "#[memoize] needs plain argument names, or a `key = ...` option",
                    ));
                }
            },
        }
    }
    let ret_type = match &sig.output {
        ReturnType::Type(_, ty) => ty.to_token_stream(),
        ReturnType::Default => {
            return Err(Error::new_spanned(
                &sig,
                "#[memoize] needs a function that returns a value",
            ));
        }
    };
    let is_result = returns_result(&sig.output);
    if options.strict && !is_result {
        return Err(Error::new(
            Span::call_site(),
            "`strict` needs a function that returns a Result",
        ));
    }
    let is_async = sig.asyncness.is_some();

    let cache = options.cache.map_or_else(
        || quote!(::logcache::memo::default_cache()),
        |c| quote!(&#c),
    );
    let ttl = match options.ttl {
        None => quote!(::core::option::Option::None),
        Some(Expr::Lit(l)) => {
            match &l.lit {
                Lit::Str(s) => {
                    let ms = parse_duration_ms(&s.value()).ok_or_else(|| {
                    Error::new_spanned(s, "expected a duration such as \"90s\", \"10m\", \"1h\", \"2d\" or \"500ms\"")
                })?;
                    quote!(::core::option::Option::Some(::std::time::Duration::from_millis(#ms)))
                }
                _ => {
                    let e = &l.lit;
                    quote!(::core::option::Option::Some(#e))
                }
            }
        }
        Some(e) => quote!(::core::option::Option::Some(#e)),
    };
    let version = options.version.map_or_else(|| quote!(0u32), |v| quote!(#v));
    let body_hash = if options.hash_body.unwrap_or(true) {
        fnv1a(&block.to_token_stream().to_string())
    } else {
        0
    };
    let key = options.key.map_or_else(
        || quote!((#(&#arg_names,)*)),
        |k| quote!(::logcache::memo::Key(&#k)),
    );
    let instance = instance(&sig);

    let hit = if is_result {
        quote!(::core::result::Result::Ok(__lc_v))
    } else {
        quote!(__lc_v)
    };
    let compute = match (is_async, is_result, options.strict) {
        (false, false, _) => quote!(__lc_m.compute(move || -> #ret_type #block)),
        (false, true, false) => quote!(__lc_m.try_compute(move || -> #ret_type #block)),
        (false, true, true) => quote!(__lc_m.try_compute_strict(move || -> #ret_type #block)),
        (true, false, _) => {
            quote!(__lc_m.compute_async(move || async move { let __lc_v: #ret_type = #block; __lc_v }).await)
        }
        (true, true, false) => {
            quote!(__lc_m.try_compute_async(move || async move { let __lc_v: #ret_type = #block; __lc_v }).await)
        }
        (true, true, true) => {
            quote!(__lc_m.try_compute_strict_async(move || async move { let __lc_v: #ret_type = #block; __lc_v }).await)
        }
    };
    let lookup = match (options.strict, is_async) {
        (true, false) => quote!(__LC_MEMO.lookup_strict(__lc_cache, #ttl, __lc_instance, #key)),
        (true, true) => {
            quote!(__LC_MEMO.lookup_strict_async(__lc_cache, #ttl, __lc_instance, #key).await)
        }
        (false, false) => quote!(__LC_MEMO.lookup(__lc_cache, #ttl, __lc_instance, #key)),
        (false, true) => {
            quote!(__LC_MEMO.lookup_async(__lc_cache, #ttl, __lc_instance, #key).await)
        }
    };
    let lookup = if options.strict {
        quote! {
            match #lookup {
                ::core::result::Result::Ok(__lc_found) => __lc_found,
                ::core::result::Result::Err(__lc_e) => {
                    return ::core::result::Result::Err(::core::convert::From::from(__lc_e));
                }
            }
        }
    } else {
        lookup
    };

    let without_lease = if options.no_lease {
        quote!(.without_lease())
    } else {
        quote!()
    };
    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            static __LC_MEMO: ::logcache::memo::Memo = ::logcache::memo::Memo::new(
                ::core::concat!(::core::module_path!(), "::", #name),
                #version,
                #body_hash,
            )#without_lease;
            let __lc_cache = ::logcache::memo::AsCache::as_cache(#cache);
            let __lc_instance: u64 = #instance;
            match #lookup {
                ::logcache::memo::Lookup::Hit(__lc_v) => #hit,
                ::logcache::memo::Lookup::Miss(__lc_m) => #compute,
            }
        }
    })
}

/// What tells the instantiations of a generic function apart: the names of its type
/// arguments, the types of its `impl Trait` arguments and its const arguments (`0` for a
/// function that is not generic).
fn instance(sig: &syn::Signature) -> proc_macro2::TokenStream {
    let mut parts = Vec::new();
    for param in &sig.generics.params {
        match param {
            syn::GenericParam::Type(t) => {
                let ident = &t.ident;
                parts.push(quote!(::core::any::type_name::<#ident>()));
            }
            syn::GenericParam::Const(c) => {
                let ident = &c.ident;
                parts.push(quote!(&*::std::string::ToString::to_string(&#ident)));
            }
            syn::GenericParam::Lifetime(_) => {}
        }
    }
    for input in &sig.inputs {
        if let FnArg::Typed(t) = input
            && t.ty.to_token_stream().to_string().contains("impl ")
            && let Pat::Ident(ident) = &*t.pat
        {
            let ident = &ident.ident;
            parts.push(quote!(::core::any::type_name_of_val(&#ident)));
        }
    }
    if parts.is_empty() {
        quote!(0u64)
    } else {
        quote!(::logcache::memo::instance(&[#(#parts),*]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("90s"), Some(90_000));
        assert_eq!(parse_duration_ms("1h"), Some(3_600_000));
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("2d"), Some(172_800_000));
        assert_eq!(parse_duration_ms("10m"), Some(600_000));
        assert_eq!(parse_duration_ms("h"), None);
        assert_eq!(parse_duration_ms("5 weeks"), None);
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(fnv1a("a"), fnv1a("b"));
    }
}
