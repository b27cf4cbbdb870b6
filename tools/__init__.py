"""Host-side tools of the appliance (conversion, quantization, training). Not installed on the device."""
