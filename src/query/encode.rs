//! Results on the wire: `Query` rows as MessagePack maps (column name →
//! value, PROTOCOL §5.1) and `QueryArrow` messages as self-contained Arrow IPC
//! streams (schema + one batch + end marker each, SEMANTICS §16 #18).
//!
//! MessagePack values by Arrow type: strings → str, integers → int, floats →
//! float, booleans → bool, binary → bin, NULL → nil, lists → array, maps →
//! map, structs → map by field name; anything else (dates, decimals,
//! intervals) → its Arrow display text.
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, GenericBinaryArray, GenericListArray, GenericStringArray, MapArray,
    RecordBatch, StructArray,
};
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// (name, Arrow type as text) of every column, e.g. `("cnt", "Int64")`.
pub fn columns(schema: &SchemaRef) -> Vec<(String, String)> {
    schema.fields().iter().map(|f| (f.name().clone(), f.data_type().to_string())).collect()
}

/// The encoded rows would pass the byte budget.
#[derive(Debug)]
pub struct OverBudget;

/// Appends every row of `batch` to `rows` as one MessagePack map each,
/// taking each row's size from `budget` (bytes left); stops at the first row
/// that does not fit.
pub fn msgpack_rows(
    schema: &SchemaRef,
    batch: &RecordBatch,
    budget: &mut usize,
    rows: &mut Vec<Vec<u8>>,
) -> Result<(), OverBudget> {
    let fields: Vec<&Field> = schema.fields().iter().map(|f| f.as_ref()).collect();
    for row in 0..batch.num_rows() {
        let mut out = Vec::with_capacity(64);
        rmp::encode::write_map_len(&mut out, fields.len() as u32).expect("writes to a Vec never fail");
        for (field, column) in fields.iter().zip(batch.columns()) {
            rmp::encode::write_str(&mut out, field.name()).expect("writes to a Vec never fail");
            write_value(&mut out, column, row);
            if out.len() > *budget {
                return Err(OverBudget);
            }
        }
        *budget -= out.len();
        rows.push(out);
    }
    Ok(())
}

fn write_value(out: &mut Vec<u8>, array: &ArrayRef, row: usize) {
    use rmp::encode as w;
    if array.is_null(row) {
        w::write_nil(out).expect("vec");
        return;
    }
    let dt = array.data_type();
    macro_rules! int {
        ($t:ty) => {{
            let v = array.as_primitive::<$t>().value(row);
            w::write_sint(out, v as i64).expect("vec");
        }};
    }
    macro_rules! uint {
        ($t:ty) => {{
            let v = array.as_primitive::<$t>().value(row);
            w::write_uint(out, v as u64).expect("vec");
        }};
    }
    use datafusion::arrow::datatypes as t;
    match dt {
        DataType::Int8 => int!(t::Int8Type),
        DataType::Int16 => int!(t::Int16Type),
        DataType::Int32 => int!(t::Int32Type),
        DataType::Int64 => int!(t::Int64Type),
        DataType::UInt8 => uint!(t::UInt8Type),
        DataType::UInt16 => uint!(t::UInt16Type),
        DataType::UInt32 => uint!(t::UInt32Type),
        DataType::UInt64 => uint!(t::UInt64Type),
        DataType::Float32 => w::write_f32(out, array.as_primitive::<t::Float32Type>().value(row)).expect("vec"),
        DataType::Float64 => w::write_f64(out, array.as_primitive::<t::Float64Type>().value(row)).expect("vec"),
        DataType::Boolean => {
            let b: &BooleanArray = array.as_boolean();
            w::write_bool(out, b.value(row)).expect("vec")
        }
        DataType::Utf8 => {
            write_str(out, array.as_any().downcast_ref::<GenericStringArray<i32>>().map(|a| a.value(row)))
        }
        DataType::LargeUtf8 => {
            write_str(out, array.as_any().downcast_ref::<GenericStringArray<i64>>().map(|a| a.value(row)))
        }
        DataType::Utf8View => write_str(out, Some(array.as_string_view().value(row))),
        DataType::Binary => {
            let a = array.as_any().downcast_ref::<GenericBinaryArray<i32>>().expect("binary");
            w::write_bin(out, a.value(row)).expect("vec")
        }
        DataType::LargeBinary => {
            let a = array.as_any().downcast_ref::<GenericBinaryArray<i64>>().expect("binary");
            w::write_bin(out, a.value(row)).expect("vec")
        }
        DataType::BinaryView => w::write_bin(out, array.as_binary_view().value(row)).expect("vec"),
        DataType::List(_) => {
            let a = array.as_any().downcast_ref::<GenericListArray<i32>>().expect("list");
            write_array(out, &a.value(row));
        }
        DataType::LargeList(_) => {
            let a = array.as_any().downcast_ref::<GenericListArray<i64>>().expect("list");
            write_array(out, &a.value(row));
        }
        DataType::Map(_, _) => {
            let m: &MapArray = array.as_map();
            let entries = m.value(row);
            let (keys, values) = (entries.column(0), entries.column(1));
            w::write_map_len(out, entries.len() as u32).expect("vec");
            for i in 0..entries.len() {
                write_value(out, keys, i);
                write_value(out, values, i);
            }
        }
        DataType::Struct(fields) => {
            let s: &StructArray = array.as_struct();
            w::write_map_len(out, fields.len() as u32).expect("vec");
            for (f, c) in fields.iter().zip(s.columns()) {
                w::write_str(out, f.name()).expect("vec");
                write_value(out, c, row);
            }
        }
        _ => {
            let text = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default())
                .map(|f| f.value(row).to_string())
                .unwrap_or_default();
            w::write_str(out, &text).expect("vec");
        }
    }
}

fn write_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => rmp::encode::write_str(out, s).expect("vec"),
        None => rmp::encode::write_nil(out).expect("vec"),
    }
}

fn write_array(out: &mut Vec<u8>, values: &ArrayRef) {
    rmp::encode::write_array_len(out, values.len() as u32).expect("vec");
    for i in 0..values.len() {
        write_value(out, values, i);
    }
}

/// One self-contained Arrow IPC stream (schema, `batch` if any, end marker).
pub fn ipc_stream(schema: &SchemaRef, batch: Option<&RecordBatch>) -> Result<Vec<u8>, ArrowError> {
    let mut w = StreamWriter::try_new(Vec::new(), schema)?;
    if let Some(b) = batch {
        w.write(b)?;
    }
    w.finish()?;
    w.into_inner()
}
