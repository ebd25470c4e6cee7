//! The shape of a type as its `Deserialize` impl asks for it: a tree built by the tracer
//! (`super::trace`), merged over several traces (one per explored enum variant), and rendered
//! as the text that is hashed into the fingerprint.

use std::collections::BTreeMap;
use std::fmt::Write;

/// One node of a traced shape.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Shape {
    /// Not reached by any trace (yet).
    Unknown,
    Primitive(&'static str),
    /// `deserialize_any`: the type reads whatever it finds (`serde_json::Value`, untagged and
    /// internally tagged enums); its shape cannot be traced.
    Any,
    Option(Box<Shape>),
    Seq(Box<Shape>),
    Map(Box<Shape>, Box<Shape>),
    Tuple(Vec<Shape>),
    UnitStruct(&'static str),
    NewtypeStruct(&'static str, Box<Shape>),
    TupleStruct(&'static str, Vec<Shape>),
    Struct(&'static str, &'static [&'static str], Vec<Shape>),
    Enum(
        &'static str,
        &'static [&'static str],
        BTreeMap<u32, Variant>,
    ),
    /// A container met again inside itself, past the expansion limit.
    Recursive(&'static str),
}

/// The content of one enum variant.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Variant {
    Unknown,
    Unit,
    Newtype(Shape),
    Tuple(Vec<Shape>),
    Struct(&'static [&'static str], Vec<Shape>),
}

fn merge_all(into: &mut [Shape], from: Vec<Shape>) {
    if into.len() == from.len() {
        for (a, b) in into.iter_mut().zip(from) {
            a.merge(b);
        }
    }
}

impl Shape {
    /// Adds what `other` knows to what `self` knows. Shapes of one type never conflict (its
    /// `Deserialize` asks for the same things every time); if they did, `self` is kept.
    pub fn merge(&mut self, other: Shape) {
        match (self, other) {
            (_, Shape::Unknown) => {}
            (this @ Shape::Unknown, other) => *this = other,
            (Shape::Option(a), Shape::Option(b)) | (Shape::Seq(a), Shape::Seq(b)) => a.merge(*b),
            (Shape::Map(k, v), Shape::Map(k2, v2)) => {
                k.merge(*k2);
                v.merge(*v2);
            }
            (Shape::NewtypeStruct(n, a), Shape::NewtypeStruct(n2, b)) if *n == n2 => a.merge(*b),
            (Shape::Tuple(a), Shape::Tuple(b)) => merge_all(a, b),
            (Shape::TupleStruct(n, a), Shape::TupleStruct(n2, b)) if *n == n2 => merge_all(a, b),
            (Shape::Struct(n, f, a), Shape::Struct(n2, f2, b)) if *n == n2 && *f == f2 => {
                merge_all(a, b)
            }
            (Shape::Enum(n, v, a), Shape::Enum(n2, v2, b)) if *n == n2 && *v == v2 => {
                for (index, variant) in b {
                    a.entry(index).or_insert(Variant::Unknown).merge(variant);
                }
            }
            _ => {}
        }
    }

    /// Whether every part of the shape is known: nothing unreached, no `deserialize_any`,
    /// every enum variant explored.
    pub fn is_complete(&self) -> bool {
        match self {
            Shape::Unknown | Shape::Any => false,
            Shape::Primitive(_) | Shape::UnitStruct(_) | Shape::Recursive(_) => true,
            Shape::Option(a) | Shape::Seq(a) | Shape::NewtypeStruct(_, a) => a.is_complete(),
            Shape::Map(k, v) => k.is_complete() && v.is_complete(),
            Shape::Tuple(a) | Shape::TupleStruct(_, a) | Shape::Struct(_, _, a) => {
                a.iter().all(Shape::is_complete)
            }
            Shape::Enum(_, names, variants) => {
                variants.len() == names.len() && variants.values().all(Variant::is_complete)
            }
        }
    }

    /// How many nodes the tree has (tracing stops growing it past a budget).
    pub fn size(&self) -> usize {
        1 + match self {
            Shape::Option(a) | Shape::Seq(a) | Shape::NewtypeStruct(_, a) => a.size(),
            Shape::Map(k, v) => k.size() + v.size(),
            Shape::Tuple(a) | Shape::TupleStruct(_, a) | Shape::Struct(_, _, a) => {
                a.iter().map(Shape::size).sum()
            }
            Shape::Enum(_, _, variants) => variants.values().map(Variant::size).sum(),
            _ => 0,
        }
    }

    /// The canonical text of the shape: what the fingerprint hashes.
    pub fn render(&self, out: &mut String) {
        match self {
            Shape::Unknown => out.push('?'),
            Shape::Primitive(name) => out.push_str(name),
            Shape::Any => out.push_str("any"),
            Shape::Option(a) => wrap(out, "option<", a, ">"),
            Shape::Seq(a) => wrap(out, "seq<", a, ">"),
            Shape::Map(k, v) => {
                out.push_str("map<");
                k.render(out);
                out.push(',');
                v.render(out);
                out.push('>');
            }
            Shape::Tuple(items) => list(out, "(", items, ")"),
            Shape::UnitStruct(name) => out.push_str(name),
            Shape::NewtypeStruct(name, a) => {
                out.push_str(name);
                wrap(out, "(", a, ")");
            }
            Shape::TupleStruct(name, items) => {
                out.push_str(name);
                list(out, "(", items, ")");
            }
            Shape::Struct(name, fields, shapes) => {
                out.push_str(name);
                fields_of(out, fields, shapes);
            }
            Shape::Enum(name, names, variants) => {
                let _ = write!(out, "enum {name}[{}]{{", names.join(","));
                for (i, (index, variant)) in variants.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{index}:");
                    variant.render(out);
                }
                out.push('}');
            }
            Shape::Recursive(name) => {
                out.push('^');
                out.push_str(name);
            }
        }
    }
}

fn wrap(out: &mut String, open: &str, inner: &Shape, close: &str) {
    out.push_str(open);
    inner.render(out);
    out.push_str(close);
}

fn list(out: &mut String, open: &str, items: &[Shape], close: &str) {
    out.push_str(open);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        item.render(out);
    }
    out.push_str(close);
}

fn fields_of(out: &mut String, names: &[&str], shapes: &[Shape]) {
    out.push('{');
    for (i, (name, shape)) in names.iter().zip(shapes).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push(':');
        shape.render(out);
    }
    out.push('}');
}

impl Variant {
    fn merge(&mut self, other: Variant) {
        match (self, other) {
            (_, Variant::Unknown) => {}
            (this @ Variant::Unknown, other) => *this = other,
            (Variant::Newtype(a), Variant::Newtype(b)) => a.merge(b),
            (Variant::Tuple(a), Variant::Tuple(b)) => merge_all(a, b),
            (Variant::Struct(f, a), Variant::Struct(f2, b)) if *f == f2 => merge_all(a, b),
            _ => {}
        }
    }

    fn is_complete(&self) -> bool {
        match self {
            Variant::Unknown => false,
            Variant::Unit => true,
            Variant::Newtype(a) => a.is_complete(),
            Variant::Tuple(a) | Variant::Struct(_, a) => a.iter().all(Shape::is_complete),
        }
    }

    fn size(&self) -> usize {
        match self {
            Variant::Unknown | Variant::Unit => 1,
            Variant::Newtype(a) => a.size(),
            Variant::Tuple(a) | Variant::Struct(_, a) => a.iter().map(Shape::size).sum(),
        }
    }

    fn render(&self, out: &mut String) {
        match self {
            Variant::Unknown => out.push('?'),
            Variant::Unit => out.push_str("unit"),
            Variant::Newtype(a) => wrap(out, "(", a, ")"),
            Variant::Tuple(items) => list(out, "(", items, ")"),
            Variant::Struct(fields, shapes) => fields_of(out, fields, shapes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_fills_what_was_unknown_and_collects_variants() {
        static NAMES: [&str; 2] = ["A", "B"];
        let mut a = Shape::Enum(
            "E",
            &NAMES,
            BTreeMap::from([(0, Variant::Newtype(Shape::Unknown))]),
        );
        assert!(!a.is_complete());
        a.merge(Shape::Enum(
            "E",
            &NAMES,
            BTreeMap::from([(1, Variant::Unit)]),
        ));
        assert!(!a.is_complete(), "variant 0's content is still unknown");
        a.merge(Shape::Enum(
            "E",
            &NAMES,
            BTreeMap::from([(0, Variant::Newtype(Shape::Primitive("u8")))]),
        ));
        assert!(a.is_complete());
        let mut text = String::new();
        a.render(&mut text);
        assert_eq!(text, "enum E[A,B]{0:(u8),1:unit}");
        assert_eq!(a.size(), 3);
        let mut unknown = Shape::Unknown;
        unknown.merge(Shape::Any);
        assert_eq!(unknown, Shape::Any);
        assert!(!unknown.is_complete());
    }
}
