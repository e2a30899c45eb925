//! A small helper for writing ONNX models from Rust (used by bnc's tests): inputs, outputs,
//! float and integer initializers, nodes with attributes.
//!
//! ```
//! use bnc_frontend::onnx::builder::{ModelBuilder, attr_ints};
//! let mut m = ModelBuilder::new(17);
//! m.input("x", &[1, 3, 8, 8]);
//! m.initializer("w", &[4, 3, 3, 3], &[0.1; 108]);
//! m.node("Conv", &["x", "w"], &["y"], vec![attr_ints("pads", &[1, 1, 1, 1])]);
//! m.output("y");
//! let bytes = m.to_bytes();
//! # assert!(!bytes.is_empty());
//! ```

use prost::Message;

use super::proto::attribute_proto::AttributeType;
use super::proto::tensor_proto::DataType;
use super::proto::tensor_shape_proto::{Dimension, dimension};
use super::proto::type_proto;
use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// Builds a [`ModelProto`] step by step.
#[derive(Clone, Debug)]
pub struct ModelBuilder {
    pub model: ModelProto,
}

/// One input dimension: a fixed size or a symbolic name (a dynamic axis).
#[derive(Clone, Debug)]
pub enum Dim {
    Fixed(i64),
    Symbolic(String),
}

impl ModelBuilder {
    /// An empty model importing the default-domain opset `opset`.
    pub fn new(opset: i64) -> ModelBuilder {
        ModelBuilder {
            model: ModelProto {
                ir_version: Some(8),
                producer_name: Some("bnc-test".into()),
                opset_import: vec![OperatorSetIdProto {
                    domain: Some(String::new()),
                    version: Some(opset),
                }],
                graph: Some(GraphProto {
                    name: Some("test".into()),
                    ..GraphProto::default()
                }),
                ..ModelProto::default()
            },
        }
    }

    pub fn graph(&mut self) -> &mut GraphProto {
        self.model.graph.as_mut().expect("builder has a graph")
    }

    /// A float32 input with fixed dimensions.
    pub fn input(&mut self, name: &str, dims: &[i64]) -> &mut Self {
        let dims: Vec<Dim> = dims.iter().map(|&d| Dim::Fixed(d)).collect();
        self.input_dims(name, &dims)
    }

    /// A float32 input whose dimensions may be symbolic.
    pub fn input_dims(&mut self, name: &str, dims: &[Dim]) -> &mut Self {
        let dim = dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d {
                    Dim::Fixed(v) => dimension::Value::DimValue(*v),
                    Dim::Symbolic(s) => dimension::Value::DimParam(s.clone()),
                }),
                denotation: None,
            })
            .collect();
        let vi = ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(DataType::Float as i32),
                    shape: Some(TensorShapeProto { dim }),
                })),
                denotation: None,
            }),
            doc_string: None,
        };
        self.graph().input.push(vi);
        self
    }

    /// A graph output (no type information: bnc infers it).
    pub fn output(&mut self, name: &str) -> &mut Self {
        self.graph().output.push(ValueInfoProto {
            name: Some(name.into()),
            ..ValueInfoProto::default()
        });
        self
    }

    /// A float32 initializer stored as raw little-endian bytes.
    pub fn initializer(&mut self, name: &str, dims: &[usize], values: &[f32]) -> &mut Self {
        let t = float_tensor(name, dims, values);
        self.graph().initializer.push(t);
        self
    }

    /// An int64 initializer.
    pub fn initializer_i64(&mut self, name: &str, dims: &[usize], values: &[i64]) -> &mut Self {
        let t = int_tensor(name, dims, values);
        self.graph().initializer.push(t);
        self
    }

    /// A node of the default domain; its name is its first output's name.
    pub fn node(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> &mut Self {
        let node = NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: Some(outputs.first().map_or(op_type, |o| o).to_string()),
            op_type: Some(op_type.into()),
            domain: Some(String::new()),
            attribute: attributes,
            ..NodeProto::default()
        };
        self.graph().node.push(node);
        self
    }

    /// The model's protobuf encoding (an `.onnx` file's bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.model.encode_to_vec()
    }
}

/// A float32 tensor with raw data.
pub fn float_tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..TensorProto::default()
    }
}

/// An int64 tensor (in `int64_data`).
pub fn int_tensor(name: &str, dims: &[usize], values: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Int64 as i32),
        int64_data: values.to_vec(),
        ..TensorProto::default()
    }
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(ty as i32),
        ..AttributeProto::default()
    }
}

pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        i: Some(v),
        ..attr(name, AttributeType::Int)
    }
}

pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        ints: v.to_vec(),
        ..attr(name, AttributeType::Ints)
    }
}

pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        f: Some(v),
        ..attr(name, AttributeType::Float)
    }
}

pub fn attr_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        s: Some(v.as_bytes().to_vec()),
        ..attr(name, AttributeType::String)
    }
}

pub fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        t: Some(t),
        ..attr(name, AttributeType::Tensor)
    }
}
