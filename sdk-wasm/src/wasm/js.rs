//! Reading plain JS values (parsed JSON, option bags) without a schema.

use js_sys::Reflect;
use wasm_bindgen::JsValue;

/// `object[key]`, or `undefined` when `object` is not an object.
pub(crate) fn get(object: &JsValue, key: &str) -> JsValue {
    if object.is_object() {
        Reflect::get(object, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
    } else {
        JsValue::UNDEFINED
    }
}

/// `object[key]` when it is a string.
pub(crate) fn get_string(object: &JsValue, key: &str) -> Option<String> {
    get(object, key).as_string()
}

/// Sets `object[key] = value` on an object made here (cannot fail).
pub(crate) fn set(object: &JsValue, key: &str, value: &JsValue) {
    let _ = Reflect::set(object, &JsValue::from_str(key), value);
}
