# Dynamic int8 quantization of an exported encoder, in the form onnxruntime's quantize_dynamic writes (which
# is not installed here): MatMuls on a weight become DynamicQuantizeLinear -> MatMulInteger (uint8 x int8)
# -> Cast -> Mul by the two scales; large embedding tables are stored int8 and dequantized after Gather.
# Called by models/build/train-encoders.py for the benchmark model's model_quantized.onnx.
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Tables smaller than this stay float: position embeddings and the like weigh little.
MIN_GATHER_ELEMENTS = 1 << 16


def symmetric_int8(weights):
    """Per-tensor symmetric int8 (zero point 0), as quantize_dynamic's QInt8 weights."""
    scale = float(np.abs(weights).max()) / 127.0 or 1.0
    return np.clip(np.round(weights / scale), -127, 127).astype(np.int8), np.float32(scale)


def quantize_dynamic_int8(src, dst):
    model = onnx.load(src)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes, added, dropped = [], [], set()
    quantized_inputs = {}

    def const(name, array):
        added.append(numpy_helper.from_array(array, name))
        return name

    for node in graph.node:
        weight = inits.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is not None and len(weight.dims) == 2:
            q, scale = symmetric_int8(numpy_helper.to_array(weight))
            base = node.output[0]
            source = node.input[0]
            if source not in quantized_inputs:
                # One DynamicQuantizeLinear per activation, shared by the MatMuls that read it (Q, K, V).
                names = [f"{source}_quantized", f"{source}_scale", f"{source}_zero_point"]
                nodes.append(helper.make_node("DynamicQuantizeLinear", [source], names, name=f"{source}_dql"))
                quantized_inputs[source] = names
            xq, xs, xz = quantized_inputs[source]
            wq = const(f"{weight.name}_int8", q)
            wz = const(f"{weight.name}_zero_point", np.int8(0))
            ws = const(f"{weight.name}_scale", scale)
            nodes += [
                helper.make_node("MatMulInteger", [xq, wq, xz, wz], [f"{base}_int32"], name=f"{node.name}_int"),
                helper.make_node("Cast", [f"{base}_int32"], [f"{base}_float"], to=TensorProto.FLOAT),
                helper.make_node("Mul", [xs, ws], [f"{base}_joint_scale"]),
                helper.make_node("Mul", [f"{base}_float", f"{base}_joint_scale"], [base]),
            ]
            dropped.add(weight.name)
            continue
        table = inits.get(node.input[0]) if node.op_type == "Gather" else None
        if table is not None and np.prod(table.dims) >= MIN_GATHER_ELEMENTS:
            q, scale = symmetric_int8(numpy_helper.to_array(table))
            wq = const(f"{table.name}_int8", q)
            ws = const(f"{table.name}_scale", scale)
            wz = const(f"{table.name}_zero_point", np.int8(0))
            rows = f"{node.output[0]}_int8"
            nodes += [
                helper.make_node("Gather", [wq, node.input[1]], [rows], name=node.name, axis=0),
                helper.make_node("DequantizeLinear", [rows, ws, wz], [node.output[0]]),
            ]
            dropped.add(table.name)
            continue
        nodes.append(node)

    still_used = {name for n in nodes for name in n.input}
    keep = [i for i in graph.initializer if i.name not in dropped or i.name in still_used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(keep + added)
    onnx.checker.check_model(model)
    onnx.save(model, dst)
