"""medkit.interop.medcoss: the official MedCoSS checkpoint layout and its conversion."""
