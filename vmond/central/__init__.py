"""The central station (issue 18): the sites' messages mirrored in, operators' actions sent out as commands."""
