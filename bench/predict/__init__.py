"""Memory and speed prediction for cards the user does not own, and the purchase advisor."""
