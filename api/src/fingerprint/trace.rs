//! The tracer: a `Deserializer` that answers a type's `Deserialize` impl with made-up values
//! and records what it asked for.
//!
//! One trace follows one variant of each enum it meets, so the type is traced again and
//! again. At every enum (told apart by its path from the root) a trace takes a variant not
//! taken there before, or else one below which some enum still has variants to take, until
//! every enum met has been explored to the end. Recursive types are cut where a
//! container appears for the third time on the way down: from there the tracer answers with
//! the smallest values it can (`None`, empty sequences, an enum variant known to end) and
//! records `Recursive`. What a trace learned before an error (a validating type refusing a
//! made-up value, a `deserialize_any` it cannot answer) is kept.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Visitor};

use super::shape::{Shape, Variant};

/// A container may appear this many times on the way down before the tracer cuts it.
const EXPANSIONS: usize = 2;
/// Traces stop after this many rounds, or once the tree has this many nodes.
const MAX_ROUNDS: usize = 4096;
const MAX_NODES: usize = 50_000;
/// Nesting deeper than this ends a trace (a recursion the cut could not end).
const MAX_DEPTH: u32 = 96;

/// Made-up bytes for `deserialize_bytes` (16: the length of a UUID).
static BYTES: [u8; 16] = [0; 16];

/// Traces `T`: its shape, and whether every part of it could be traced.
pub(super) fn trace<T: DeserializeOwned>() -> (Shape, bool) {
    let state = RefCell::new(State::default());
    let mut tree = Shape::Unknown;
    for _ in 0..MAX_ROUNDS {
        {
            let mut s = state.borrow_mut();
            s.progress = false;
            s.stack.clear();
            s.variants.clear();
        }
        let mut shape = Shape::Unknown;
        let tracer = Ctx {
            state: &state,
            path: 0,
            minimal: false,
            depth: 0,
        }
        .tracer(&mut shape);
        // A `Deserialize` impl that panics on a made-up value leaves the trace incomplete.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| T::deserialize(tracer)));
        tree.merge(shape);
        if !state.borrow().progress || tree.size() > MAX_NODES {
            break;
        }
    }
    let complete = tree.is_complete() && !state.borrow().progress;
    (tree, complete)
}

#[derive(Default)]
struct State {
    /// Variants taken so far, per enum occurrence (a hash of its path from the root).
    explored: HashMap<u64, BTreeSet<u32>>,
    /// Per enum occurrence and variant: the enum occurrences met inside that variant.
    inner: HashMap<(u64, u32), BTreeSet<u64>>,
    /// The enum occurrences and variants the trace is inside of.
    variants: Vec<(u64, u32)>,
    /// Per enum occurrence, its number of variants.
    variant_count: HashMap<u64, u32>,
    /// Variants whose trace produced a value, per enum: the ones that end a recursion.
    ending: HashMap<&'static str, BTreeSet<u32>>,
    /// Per enum, the variant to try next below a cut while none is known to end.
    next_below_cut: HashMap<&'static str, u32>,
    /// The containers on the way down.
    stack: Vec<&'static str>,
    /// This round took a variant not taken before.
    progress: bool,
}

/// Where a node of the trace is: the state shared by the whole trace, the node's path from the
/// root, its depth, and whether it is below a cut.
#[derive(Clone, Copy)]
struct Ctx<'s> {
    state: &'s RefCell<State>,
    path: u64,
    /// Below a cut: answer with the smallest values, record nothing.
    minimal: bool,
    depth: u32,
}

impl<'s> Ctx<'s> {
    /// The context one step further down.
    fn down(self, segment: u64, minimal: bool) -> Ctx<'s> {
        Ctx {
            state: self.state,
            path: step(self.path, segment),
            minimal,
            depth: self.depth + 1,
        }
    }

    fn tracer<'o>(self, out: &'o mut Shape) -> Tracer<'s, 'o> {
        Tracer { ctx: self, out }
    }

    /// Traces `len` elements (or fields) with `visitor`; returns their shapes.
    fn elements<'de, V: Visitor<'de>>(
        self,
        len: usize,
        minimal: bool,
        visitor: V,
    ) -> (Vec<Shape>, Result<V::Value, TraceError>) {
        let mut access = Elements {
            ctx: Ctx { minimal, ..self },
            shapes: vec![Shape::Unknown; len],
            next: 0,
            element_path: None,
        };
        let result = visitor.visit_seq(&mut access);
        (access.shapes, result)
    }
}

impl State {
    /// Whether every variant of the enum occurrence at `path`, and of every enum occurrence
    /// inside them, has been taken.
    fn exhausted(&self, path: u64, depth: u32) -> bool {
        if depth > MAX_DEPTH {
            return true;
        }
        let (Some(explored), Some(&count)) =
            (self.explored.get(&path), self.variant_count.get(&path))
        else {
            return false;
        };
        explored.len() == count as usize
            && explored.iter().all(|&v| {
                self.inner
                    .get(&(path, v))
                    .is_none_or(|inner| inner.iter().all(|&p| self.exhausted(p, depth + 1)))
            })
    }
}

/// A `Deserializer` that writes the shape asked for into `out`.
struct Tracer<'s, 'o> {
    ctx: Ctx<'s>,
    out: &'o mut Shape,
}

#[derive(Debug)]
pub(super) struct TraceError(String);

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        TraceError(msg.to_string())
    }
}

/// The path of a child: a mix of the parent's path and the step taken.
fn step(path: u64, segment: u64) -> u64 {
    (path ^ segment.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .rotate_left(23)
        .wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

/// Steps that are not an element index.
const SOME: u64 = 1 << 40;
const ELEMENT: u64 = 2 << 40;
const MAP_KEY: u64 = 3 << 40;
const MAP_VALUE: u64 = 4 << 40;
const NEWTYPE: u64 = 5 << 40;
const VARIANT: u64 = 6 << 40;

impl Tracer<'_, '_> {
    fn check_depth(&self) -> Result<(), TraceError> {
        if self.ctx.depth > MAX_DEPTH {
            return Err(TraceError("the type nests too deep to trace".into()));
        }
        Ok(())
    }

    /// Enters container `name`: whether this occurrence is cut (recorded as `Recursive` and
    /// traced minimally below).
    fn enter(&self, name: &'static str) -> bool {
        let mut state = self.ctx.state.borrow_mut();
        let cut =
            !self.ctx.minimal && state.stack.iter().filter(|n| **n == name).count() >= EXPANSIONS;
        state.stack.push(name);
        cut
    }

    fn leave(&self) {
        self.ctx.state.borrow_mut().stack.pop();
    }

    /// Records `shape` for this node, unless below a cut (or this node is the cut).
    fn record(self, cut: Option<&'static str>, shape: Shape) {
        *self.out = match cut {
            Some(name) => Shape::Recursive(name),
            None if self.ctx.minimal => Shape::Unknown,
            None => shape,
        };
    }

    /// Which variant of enum `name` (with `count` variants) to take here.
    fn choose(&self, name: &'static str, count: u32, minimal: bool) -> u32 {
        let mut state = self.ctx.state.borrow_mut();
        let ending = state.ending.get(name).and_then(|e| e.first().copied());
        if minimal {
            if let Some(ending) = ending {
                return ending;
            }
            let next = state.next_below_cut.entry(name).or_insert(0);
            let choice = *next % count;
            if *next < count {
                *next += 1;
                state.progress = true;
            }
            return choice;
        }
        let path = self.ctx.path;
        state.variant_count.insert(path, count);
        if let Some(&outer) = state.variants.last() {
            state.inner.entry(outer).or_default().insert(path);
        }
        let explored = state.explored.entry(path).or_default();
        if let Some(fresh) = (0..count).find(|v| !explored.contains(v)) {
            explored.insert(fresh);
            state.progress = true;
            return fresh;
        }
        (0..count)
            .find(|&v| {
                state
                    .inner
                    .get(&(path, v))
                    .is_some_and(|inner| inner.iter().any(|&p| !state.exhausted(p, 0)))
            })
            .or(ending)
            .unwrap_or(0)
    }
}

/// The elements of a tuple, struct or variant (each its own path), or of a sequence (one
/// path for every element).
struct Elements<'s> {
    ctx: Ctx<'s>,
    shapes: Vec<Shape>,
    next: usize,
    element_path: Option<u64>,
}

impl<'de> de::SeqAccess<'de> for Elements<'_> {
    type Error = TraceError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, TraceError> {
        let Some(slot) = self.shapes.get_mut(self.next) else {
            return Ok(None);
        };
        let segment = self.element_path.unwrap_or(self.next as u64);
        self.next += 1;
        let ctx = self.ctx.down(segment, self.ctx.minimal);
        seed.deserialize(ctx.tracer(slot)).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.shapes.len() - self.next)
    }
}

/// A map of at most one entry.
struct Entry<'s> {
    ctx: Ctx<'s>,
    key: Shape,
    value: Shape,
    left: bool,
}

impl<'de> de::MapAccess<'de> for Entry<'_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TraceError> {
        if !self.left {
            return Ok(None);
        }
        self.left = false;
        let ctx = self.ctx.down(MAP_KEY, false);
        seed.deserialize(ctx.tracer(&mut self.key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, TraceError> {
        let ctx = self.ctx.down(MAP_VALUE, false);
        seed.deserialize(ctx.tracer(&mut self.value))
    }
}

/// The variant chosen for an enum.
struct EnumTrace<'s, 'v> {
    /// The variant's node.
    ctx: Ctx<'s>,
    index: u32,
    slot: &'v mut Variant,
}

impl<'de, 's, 'v> de::EnumAccess<'de> for EnumTrace<'s, 'v> {
    type Error = TraceError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self), TraceError> {
        let variant =
            seed.deserialize(de::value::U32Deserializer::<TraceError>::new(self.index))?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for EnumTrace<'_, '_> {
    type Error = TraceError;

    fn unit_variant(self) -> Result<(), TraceError> {
        *self.slot = Variant::Unit;
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, TraceError> {
        let mut inner = Shape::Unknown;
        let ctx = self.ctx.down(NEWTYPE, self.ctx.minimal);
        let result = seed.deserialize(ctx.tracer(&mut inner));
        *self.slot = Variant::Newtype(inner);
        result
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let (shapes, result) = self.ctx.elements(len, self.ctx.minimal, visitor);
        *self.slot = Variant::Tuple(shapes);
        result
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let (shapes, result) = self.ctx.elements(fields.len(), self.ctx.minimal, visitor);
        *self.slot = Variant::Struct(fields, shapes);
        result
    }
}

impl<'de> de::Deserializer<'de> for Tracer<'_, '_> {
    type Error = TraceError;

    fn is_human_readable(&self) -> bool {
        // The cache's codec is binary: trace what it will be asked for.
        false
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(None, Shape::Any);
        visitor.visit_unit()
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(None, Shape::Primitive("bool"));
        visitor.visit_bool(false)
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(None, Shape::Primitive("i8"));
        visitor.visit_i8(1)
    }

    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(None, Shape::Primitive("i16"));
        visitor.visit_i16(1)
    }

    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(None, Shape::Primitive("i32"));
        visitor.visit_i32(1)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(None, Shape::Primitive("i64"));
        visitor.visit_i64(1)
    }

    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(None, Shape::Primitive("i128"));
        visitor.visit_i128(1)
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(None, Shape::Primitive("u8"));
        visitor.visit_u8(1)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(None, Shape::Primitive("u16"));
        visitor.visit_u16(1)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(None, Shape::Primitive("u32"));
        visitor.visit_u32(1)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(None, Shape::Primitive("u64"));
        visitor.visit_u64(1)
    }

    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(None, Shape::Primitive("u128"));
        visitor.visit_u128(1)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(None, Shape::Primitive("f32"));
        visitor.visit_f32(1.0)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(None, Shape::Primitive("f64"));
        visitor.visit_f64(1.0)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(None, Shape::Primitive("char"));
        visitor.visit_char('a')
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(None, Shape::Primitive("str"));
        visitor.visit_str("")
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(None, Shape::Primitive("str"));
        visitor.visit_string(String::new())
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(None, Shape::Primitive("bytes"));
        visitor.visit_bytes(&BYTES)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(None, Shape::Primitive("bytes"));
        visitor.visit_byte_buf(BYTES.to_vec())
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.check_depth()?;
        if self.ctx.minimal {
            self.record(None, Shape::Unknown);
            return visitor.visit_none();
        }
        let mut inner = Shape::Unknown;
        let result = visitor.visit_some(self.ctx.down(SOME, false).tracer(&mut inner));
        self.record(None, Shape::Option(Box::new(inner)));
        result
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(None, Shape::Primitive("unit"));
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.record(None, Shape::UnitStruct(name));
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.check_depth()?;
        let cut = self.enter(name);
        let mut inner = Shape::Unknown;
        let ctx = self.ctx.down(NEWTYPE, self.ctx.minimal || cut);
        let result = visitor.visit_newtype_struct(ctx.tracer(&mut inner));
        self.leave();
        self.record(
            cut.then_some(name),
            Shape::NewtypeStruct(name, Box::new(inner)),
        );
        result
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.check_depth()?;
        let len = usize::from(!self.ctx.minimal);
        let mut access = Elements {
            ctx: self.ctx,
            shapes: vec![Shape::Unknown; len],
            next: 0,
            element_path: Some(ELEMENT),
        };
        let result = visitor.visit_seq(&mut access);
        let element = access.shapes.pop().unwrap_or(Shape::Unknown);
        self.record(None, Shape::Seq(Box::new(element)));
        result
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.check_depth()?;
        let (shapes, result) = self.ctx.elements(len, self.ctx.minimal, visitor);
        self.record(None, Shape::Tuple(shapes));
        result
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.check_depth()?;
        let cut = self.enter(name);
        let (shapes, result) = self.ctx.elements(len, self.ctx.minimal || cut, visitor);
        self.leave();
        self.record(cut.then_some(name), Shape::TupleStruct(name, shapes));
        result
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.check_depth()?;
        let mut access = Entry {
            ctx: self.ctx,
            key: Shape::Unknown,
            value: Shape::Unknown,
            left: !self.ctx.minimal,
        };
        let result = visitor.visit_map(&mut access);
        self.record(
            None,
            Shape::Map(Box::new(access.key), Box::new(access.value)),
        );
        result
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.check_depth()?;
        let cut = self.enter(name);
        let (shapes, result) = self
            .ctx
            .elements(fields.len(), self.ctx.minimal || cut, visitor);
        self.leave();
        self.record(cut.then_some(name), Shape::Struct(name, fields, shapes));
        result
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.check_depth()?;
        let Ok(count @ 1..) = u32::try_from(variants.len()) else {
            self.record(None, Shape::Enum(name, variants, Default::default()));
            return Err(TraceError(format!("enum {name} has no variant to trace")));
        };
        let cut = self.enter(name);
        let minimal = self.ctx.minimal || cut;
        let index = self.choose(name, count, minimal);
        let mut variant = Variant::Unknown;
        if !minimal {
            self.ctx
                .state
                .borrow_mut()
                .variants
                .push((self.ctx.path, index));
        }
        let result = visitor.visit_enum(EnumTrace {
            ctx: self.ctx.down(VARIANT + u64::from(index), minimal),
            index,
            slot: &mut variant,
        });
        if !minimal {
            self.ctx.state.borrow_mut().variants.pop();
        }
        self.leave();
        if result.is_ok() {
            self.ctx
                .state
                .borrow_mut()
                .ending
                .entry(name)
                .or_default()
                .insert(index);
        }
        let shape = Shape::Enum(name, variants, [(index, variant)].into_iter().collect());
        self.record(cut.then_some(name), shape);
        result
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(None, Shape::Primitive("identifier"));
        visitor.visit_str("")
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(None, Shape::Primitive("ignored"));
        visitor.visit_unit()
    }
}
