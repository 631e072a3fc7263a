"""A two-level 2D U-Net made only of liverzoo's shared blocks."""
import keras

from liverzoo.layers.conv_norm_act import apply_conv_norm_act
from liverzoo.layers.heads import apply_softmax_head


def build_toy_unet(input_shape, num_classes=3, *, filters=4, name="toy_unet"):
    """Toy U-Net: conv-norm-act, 2x2 pooling, conv-norm-act, upsampling, skip, softmax head."""
    inputs = keras.Input(input_shape)
    skip = apply_conv_norm_act(inputs, filters, norm="batch", activation="relu", name=f"{name}_enc")
    x = keras.layers.MaxPooling2D(2)(skip)
    x = apply_conv_norm_act(x, 2 * filters, norm="batch", activation="relu", name=f"{name}_mid")
    x = keras.layers.UpSampling2D(2)(x)
    x = keras.layers.Concatenate()([x, skip])
    x = apply_conv_norm_act(x, filters, norm="batch", activation="relu", name=f"{name}_dec")
    return keras.Model(inputs, apply_softmax_head(x, num_classes, name=f"{name}_head"), name=name)
