"""medkit.hub: references, pushing and pulling runs through the Hugging Face Hub, model cards, safe loading."""
