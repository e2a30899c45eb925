//! Exact per-channel affine maps for the e-graph (docs/design.md §3, "Exact vectors").
//!
//! Every number that enters a map (a BN channel's scale and shift, a conv's pad fill) is an
//! *atom* with a cached f64 value. A scale is a signed monomial over atoms (`s₁·s₂⁻¹`), a shift
//! or fill a polynomial with integer coefficients (`t₁·s₂⁻¹ − t₂`). Composition and inversion
//! stay in this form, so `s·(1/s)` is exactly 1 and `(t/s)·s − t` exactly 0; maps are interned
//! by content, so a fold followed by an unfold lands on the same e-node instead of a rounded
//! near-copy, and saturation terminates. f64 values are only computed to check conditions
//! (signs, zeros) and to build weights after extraction.

use std::collections::{HashMap, HashSet};

use crate::affine::ChannelMap;

/// Index of an atom in [`Numbers`].
pub type Atom = u32;

/// A product of atoms with non-zero integer exponents, sorted by atom.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mono(Vec<(Atom, i32)>);

impl Mono {
    pub fn one() -> Mono {
        Mono(Vec::new())
    }

    pub fn atom(a: Atom) -> Mono {
        Mono(vec![(a, 1)])
    }

    pub fn is_one(&self) -> bool {
        self.0.is_empty()
    }

    pub fn mul(&self, other: &Mono) -> Mono {
        let (mut i, mut j) = (0, 0);
        let (a, b) = (&self.0, &other.0);
        let mut out = Vec::with_capacity(a.len() + b.len());
        while i < a.len() || j < b.len() {
            if j == b.len() || (i < a.len() && a[i].0 < b[j].0) {
                out.push(a[i]);
                i += 1;
            } else if i == a.len() || b[j].0 < a[i].0 {
                out.push(b[j]);
                j += 1;
            } else {
                let e = a[i].1 + b[j].1;
                if e != 0 {
                    out.push((a[i].0, e));
                }
                i += 1;
                j += 1;
            }
        }
        Mono(out)
    }

    pub fn inverse(&self) -> Mono {
        Mono(self.0.iter().map(|&(a, e)| (a, -e)).collect())
    }

    pub fn atoms(&self) -> impl Iterator<Item = Atom> + '_ {
        self.0.iter().map(|&(a, _)| a)
    }

    /// Whether some atom is divided by (an inverse map's scale).
    pub fn divides(&self) -> bool {
        self.0.iter().any(|&(_, e)| e < 0)
    }

    fn value(&self, numbers: &Numbers) -> f64 {
        self.0
            .iter()
            .map(|&(a, e)| numbers.value(a).powi(e))
            .product()
    }
}

/// `coef · mono`: a scale entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Term {
    pub coef: i64,
    pub mono: Mono,
}

impl Term {
    pub fn one() -> Term {
        Term {
            coef: 1,
            mono: Mono::one(),
        }
    }

    pub fn is_one(&self) -> bool {
        self.coef == 1 && self.mono.is_one()
    }

    pub fn mul(&self, other: &Term) -> Term {
        Term {
            coef: self.coef * other.coef,
            mono: self.mono.mul(&other.mono),
        }
    }

    /// The inverse, when it stays in this form (coefficient ±1).
    pub fn inverse(&self) -> Option<Term> {
        (self.coef == 1 || self.coef == -1).then(|| Term {
            coef: self.coef,
            mono: self.mono.inverse(),
        })
    }

    pub fn value(&self, numbers: &Numbers) -> f64 {
        self.coef as f64 * self.mono.value(numbers)
    }
}

/// A sum of terms with distinct monomials and non-zero coefficients, sorted by monomial.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Poly(Vec<Term>);

impl Poly {
    pub fn zero() -> Poly {
        Poly(Vec::new())
    }

    pub fn term(t: Term) -> Poly {
        if t.coef == 0 {
            Poly::zero()
        } else {
            Poly(vec![t])
        }
    }

    pub fn is_zero(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether some term divides by an atom.
    pub fn divides(&self) -> bool {
        self.0.iter().any(|t| t.mono.divides())
    }

    pub fn add(&self, other: &Poly) -> Poly {
        let mut terms: Vec<Term> = self.0.iter().chain(&other.0).cloned().collect();
        terms.sort_by(|a, b| a.mono.cmp(&b.mono));
        let mut out: Vec<Term> = Vec::with_capacity(terms.len());
        for t in terms {
            match out.last_mut() {
                Some(last) if last.mono == t.mono => last.coef += t.coef,
                _ => out.push(t),
            }
        }
        out.retain(|t| t.coef != 0);
        Poly(out)
    }

    pub fn neg(&self) -> Poly {
        Poly(
            self.0
                .iter()
                .map(|t| Term {
                    coef: -t.coef,
                    mono: t.mono.clone(),
                })
                .collect(),
        )
    }

    pub fn scale(&self, by: &Term) -> Poly {
        let mut out = Poly::zero();
        for t in &self.0 {
            out = out.add(&Poly::term(t.mul(by)));
        }
        out
    }

    pub fn value(&self, numbers: &Numbers) -> f64 {
        self.0.iter().map(|t| t.value(numbers)).sum()
    }
}

/// The atoms' values.
#[derive(Clone, Debug, Default)]
pub struct Numbers {
    values: Vec<f64>,
    /// Atoms of constants from the graph's attributes (a pad value), one per value, so that
    /// a rule firing twice builds the same map.
    shared: HashMap<u64, Atom>,
}

impl Numbers {
    pub fn atom(&mut self, value: f64) -> Atom {
        self.values.push(value);
        (self.values.len() - 1) as Atom
    }

    pub fn value(&self, a: Atom) -> f64 {
        self.values[a as usize]
    }

    /// Like [`Numbers::constant`], but equal values share one atom.
    pub fn shared_constant(&mut self, value: f64) -> Poly {
        if value == 0.0 || value == 1.0 {
            return self.constant(value);
        }
        let atom = match self.shared.get(&value.to_bits()) {
            Some(&a) => a,
            None => {
                let a = self.atom(value);
                self.shared.insert(value.to_bits(), a);
                a
            }
        };
        Poly::term(Term {
            coef: 1,
            mono: Mono::atom(atom),
        })
    }

    /// A constant as a polynomial: 0 is the zero polynomial, 1 the unit, anything else an atom.
    pub fn constant(&mut self, value: f64) -> Poly {
        if value == 0.0 {
            Poly::zero()
        } else if value == 1.0 {
            Poly::term(Term::one())
        } else {
            Poly::term(Term {
                coef: 1,
                mono: Mono::atom(self.atom(value)),
            })
        }
    }
}

/// An exact per-channel map `y[c] = scale[c]·x[c] + shift[c]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExactMap {
    pub scale: Vec<Term>,
    pub shift: Vec<Poly>,
}

impl ExactMap {
    pub fn identity(channels: usize) -> ExactMap {
        ExactMap {
            scale: vec![Term::one(); channels],
            shift: vec![Poly::zero(); channels],
        }
    }

    pub fn len(&self) -> usize {
        self.scale.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scale.is_empty()
    }

    pub fn is_identity(&self) -> bool {
        self.scale.iter().all(Term::is_one) && self.shift.iter().all(Poly::is_zero)
    }

    /// Whether every scale is 1 (the map only shifts).
    pub fn is_shift_only(&self) -> bool {
        self.scale.iter().all(Term::is_one)
    }

    /// `after ∘ self`.
    pub fn then(&self, after: &ExactMap) -> ExactMap {
        ExactMap {
            scale: self
                .scale
                .iter()
                .zip(&after.scale)
                .map(|(a, b)| a.mul(b))
                .collect(),
            shift: self
                .shift
                .iter()
                .zip(&after.scale)
                .zip(&after.shift)
                .map(|((t1, s2), t2)| t1.scale(s2).add(t2))
                .collect(),
        }
    }

    /// `x = (y − t)/s`; `None` if some scale is not invertible in this form. (Whether a
    /// scale is numerically zero is a separate check on the values.)
    pub fn inverse(&self) -> Option<ExactMap> {
        let inv: Option<Vec<Term>> = self.scale.iter().map(Term::inverse).collect();
        let inv = inv?;
        let shift = self
            .shift
            .iter()
            .zip(&inv)
            .map(|(t, si)| t.scale(si).neg())
            .collect();
        Some(ExactMap { scale: inv, shift })
    }

    pub fn slice(&self, start: usize, len: usize) -> ExactMap {
        ExactMap {
            scale: self.scale[start..start + len].to_vec(),
            shift: self.shift[start..start + len].to_vec(),
        }
    }

    /// The map whose channel `c` is this map's channel `src(c)`, over `channels` channels
    /// (a channel shuffle's permutation, either way).
    pub fn gather(&self, channels: usize, src: impl Fn(usize) -> usize) -> ExactMap {
        ExactMap {
            scale: (0..channels).map(|c| self.scale[src(c)].clone()).collect(),
            shift: (0..channels).map(|c| self.shift[src(c)].clone()).collect(),
        }
    }

    pub fn concat(parts: &[&ExactMap]) -> ExactMap {
        ExactMap {
            scale: parts.iter().flat_map(|m| m.scale.iter().cloned()).collect(),
            shift: parts.iter().flat_map(|m| m.shift.iter().cloned()).collect(),
        }
    }

    /// `(selected, rest)`: this map on the channels where `mask` is true (identity elsewhere),
    /// and on the others. They act on disjoint channels, so `self = selected ∘ rest = rest ∘
    /// selected`.
    pub fn split(&self, mask: &[bool]) -> (ExactMap, ExactMap) {
        let pick = |keep: bool| ExactMap {
            scale: (0..self.len())
                .map(|c| {
                    if mask[c] == keep {
                        self.scale[c].clone()
                    } else {
                        Term::one()
                    }
                })
                .collect(),
            shift: (0..self.len())
                .map(|c| {
                    if mask[c] == keep {
                        self.shift[c].clone()
                    } else {
                        Poly::zero()
                    }
                })
                .collect(),
        };
        (pick(true), pick(false))
    }

    /// The map on a flattened `[N, C·positions]` tensor: each channel's entry repeated for its
    /// `positions` spatial positions (flatten keeps channel-major order).
    pub fn repeat(&self, positions: usize) -> ExactMap {
        let spread = |c: usize| c / positions;
        ExactMap {
            scale: (0..self.len() * positions)
                .map(|k| self.scale[spread(k)].clone())
                .collect(),
            shift: (0..self.len() * positions)
                .map(|k| self.shift[spread(k)].clone())
                .collect(),
        }
    }

    /// The inverse of [`ExactMap::repeat`]: the first entry of each block of `positions`,
    /// when every block is one map, that is when each block's entries have equal values
    /// (`values` is this map's value; different atoms with equal values are the same number).
    pub fn compress(&self, positions: usize, values: &ChannelMap) -> Option<ExactMap> {
        if positions == 0 || !self.len().is_multiple_of(positions) {
            return None;
        }
        let blocks = self.len() / positions;
        let uniform = (0..blocks).all(|b| {
            let first = b * positions;
            (first..first + positions).all(|k| {
                values.scale[k] == values.scale[first] && values.shift[k] == values.shift[first]
            })
        });
        uniform.then(|| ExactMap {
            scale: (0..blocks)
                .map(|b| self.scale[b * positions].clone())
                .collect(),
            shift: (0..blocks)
                .map(|b| self.shift[b * positions].clone())
                .collect(),
        })
    }

    /// Only the scale: `(s, 0)`.
    pub fn scale_part(&self) -> ExactMap {
        ExactMap {
            scale: self.scale.clone(),
            shift: vec![Poly::zero(); self.len()],
        }
    }

    /// The shift moved in front of the scale: `(1, t/s)`, so that
    /// `self = scale_part ∘ shift_before_scale`. `None` if a scale is not invertible.
    pub fn shift_before_scale(&self) -> Option<ExactMap> {
        let shift: Option<Vec<Poly>> = self
            .shift
            .iter()
            .zip(&self.scale)
            .map(|(t, s)| Some(t.scale(&s.inverse()?)))
            .collect();
        Some(ExactMap {
            scale: vec![Term::one(); self.len()],
            shift: shift?,
        })
    }

    /// The shift alone: `(1, t)`, so that `self = shift_only ∘ scale_part`.
    pub fn shift_part(&self) -> ExactMap {
        ExactMap {
            scale: vec![Term::one(); self.len()],
            shift: self.shift.clone(),
        }
    }

    /// Every atom the map mentions.
    pub fn atoms_all(&self) -> impl Iterator<Item = Atom> + '_ {
        let scales = self.scale.iter().flat_map(|t| t.mono.atoms());
        let shifts = self
            .shift
            .iter()
            .flat_map(|p| p.0.iter())
            .flat_map(|t| t.mono.atoms());
        scales.chain(shifts)
    }

    /// How the map carries a batch-norm whose scale atoms are `scales` and whose atoms
    /// (scales and shifts) are `all`: its scale (`Direct`), the inverse of its scale
    /// (`Inverse`, a compensation), only something of its shift (`ShiftOnly`), or nothing.
    pub fn presence(&self, scales: &HashSet<Atom>, all: &HashSet<Atom>) -> Presence {
        let mut inverse = false;
        for term in &self.scale {
            for &(a, e) in &term.mono.0 {
                if scales.contains(&a) {
                    if e > 0 {
                        return Presence::Direct;
                    }
                    inverse = true;
                }
            }
        }
        if inverse {
            return Presence::Inverse;
        }
        let in_shift = self
            .shift
            .iter()
            .flat_map(|p| p.0.iter())
            .any(|t| t.mono.0.iter().any(|(a, _)| all.contains(a)));
        if in_shift {
            Presence::ShiftOnly
        } else {
            Presence::Absent
        }
    }

    pub fn evaluate(&self, numbers: &Numbers) -> ChannelMap {
        ChannelMap {
            scale: self.scale.iter().map(|s| s.value(numbers)).collect(),
            shift: self.shift.iter().map(|t| t.value(numbers)).collect(),
        }
    }
}

/// See [`ExactMap::presence`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    Direct,
    Inverse,
    ShiftOnly,
    Absent,
}

/// Index of an interned map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MapId(pub u32);

/// Interned exact maps with their numeric values, so equal maps are one id.
#[derive(Debug, Default)]
pub struct Maps {
    pub numbers: Numbers,
    maps: Vec<ExactMap>,
    values: Vec<ChannelMap>,
    ids: HashMap<ExactMap, MapId>,
}

impl Maps {
    pub fn intern(&mut self, map: ExactMap) -> MapId {
        if let Some(&id) = self.ids.get(&map) {
            return id;
        }
        let id = MapId(self.maps.len() as u32);
        self.values.push(map.evaluate(&self.numbers));
        self.maps.push(map.clone());
        self.ids.insert(map, id);
        id
    }

    pub fn get(&self, id: MapId) -> &ExactMap {
        &self.maps[id.0 as usize]
    }

    /// The map's numeric value (f64).
    pub fn value(&self, id: MapId) -> &ChannelMap {
        &self.values[id.0 as usize]
    }

    /// A fresh map whose every scale and shift is an atom of the given values (a BN).
    pub fn atoms(&mut self, map: &ChannelMap) -> MapId {
        let scale = map
            .scale
            .iter()
            .map(|&s| {
                if s == 1.0 {
                    Term::one()
                } else {
                    Term {
                        coef: 1,
                        mono: Mono::atom(self.numbers.atom(s)),
                    }
                }
            })
            .collect();
        let shift = map
            .shift
            .iter()
            .map(|&t| self.numbers.constant(t))
            .collect();
        self.intern(ExactMap { scale, shift })
    }

    pub fn len(&self) -> usize {
        self.maps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bn(maps: &mut Maps, s: &[f64], t: &[f64]) -> MapId {
        maps.atoms(&ChannelMap {
            scale: s.to_vec(),
            shift: t.to_vec(),
        })
    }

    #[test]
    fn a_map_composed_with_its_inverse_is_exactly_the_identity() {
        let mut maps = Maps::default();
        let m = bn(&mut maps, &[0.3, -1.7, 2.0 / 3.0], &[0.1, 0.2, -0.7]);
        let map = maps.get(m).clone();
        let inv = map.inverse().unwrap();
        assert!(map.then(&inv).is_identity());
        assert!(inv.then(&map).is_identity());
        // With f64 arithmetic this fails for some values: 1/3 · 3 style rounding.
        let id = maps.intern(map.then(&inv));
        assert_eq!(id, maps.intern(ExactMap::identity(3)));
    }

    #[test]
    fn splitting_shift_from_scale_recomposes_exactly() {
        let mut maps = Maps::default();
        let m = bn(&mut maps, &[0.3, 1.7], &[0.1, -0.2]);
        let map = maps.get(m).clone();
        let before = map.shift_before_scale().unwrap();
        assert_eq!(before.then(&map.scale_part()), map);
        assert_eq!(map.scale_part().then(&map.shift_part()), map);
    }

    #[test]
    fn values_follow_the_algebra() {
        let mut maps = Maps::default();
        let a = bn(&mut maps, &[2.0, 0.5], &[1.0, -3.0]);
        let b = bn(&mut maps, &[-4.0, 3.0], &[0.25, 1.5]);
        let ab = maps.get(a).then(maps.get(b));
        let id = maps.intern(ab);
        let v = maps.value(id);
        assert_eq!(v.scale, vec![-8.0, 1.5]);
        assert_eq!(v.shift, vec![-4.0 + 0.25, -9.0 + 1.5]);
    }

    #[test]
    fn a_repeated_map_compresses_back_only_when_each_block_is_one_map() {
        let mut maps = Maps::default();
        let m = bn(&mut maps, &[2.0, -0.5], &[1.0, 3.0]);
        let map = maps.get(m).clone();
        let repeated = map.repeat(3);
        assert_eq!(repeated.len(), 6);
        let id = maps.intern(repeated.clone());
        assert_eq!(repeated.compress(3, maps.value(id)), Some(map));
        // A per-feature map (one entry differs inside a block) is not a per-channel one.
        let features = bn(&mut maps, &[2.0, 2.0, 2.0, 1.0, 1.0, 1.5], &[0.0; 6]);
        let features_map = maps.get(features).clone();
        assert_eq!(features_map.compress(3, maps.value(features)), None);
    }

    #[test]
    fn equal_maps_intern_to_one_id_and_different_ones_do_not() {
        let mut maps = Maps::default();
        let a = bn(&mut maps, &[2.0], &[1.0]);
        let b = bn(&mut maps, &[2.0], &[1.0]);
        // Different BNs get different atoms even with equal values: they are different
        // symbols, which keeps the algebra honest.
        assert_ne!(a, b);
        let again = maps.intern(maps.get(a).clone());
        assert_eq!(a, again);
    }
}
